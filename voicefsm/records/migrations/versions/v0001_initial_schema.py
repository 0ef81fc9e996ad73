"""The call records as voicefsm made them before it had migrations: calls, turns, transitions, slots, errors.

Revision ID: 0001
Revises:
Create Date: 2026-12-07

Frozen: a revision never imports voicefsm's current tables (they move on; this file must not).
Datetimes are ``DateTime(timezone=True)``, the column type under ``UtcDateTime``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SID = sa.String(length=128)
NAME = sa.String(length=255)


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _call_sid(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("call_sid", SID, nullable=False),
        sa.ForeignKeyConstraint(["call_sid"], ["calls.call_sid"], name=f"{table}_call_sid_fkey"),
    ]


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", SID, nullable=False),
        sa.Column("flow", NAME, nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=True),
        _at("started_at"),
        _at("ended_at", nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("final_state", NAME, nullable=True),
        sa.Column("current_state", NAME, nullable=True),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("call_sid", name="calls_pkey"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])

    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_call_sid("turns"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("speaker", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _at("started_at"),
        _at("ended_at", nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="turns_pkey"),
    )
    op.create_index("ix_turns_call_seq", "turns", ["call_sid", "seq"])

    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_call_sid("transitions"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source", NAME, nullable=False),
        sa.Column("event", NAME, nullable=False),
        sa.Column("target", NAME, nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("id", name="transitions_pkey"),
    )
    op.create_index("ix_transitions_call_seq", "transitions", ["call_sid", "seq"])

    op.create_table(
        "slots",
        *_call_sid("slots"),
        sa.Column("name", NAME, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("call_sid", "name", name="slots_pkey"),
    )

    op.create_table(
        "errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_call_sid("errors"),
        _at("at"),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("where", NAME, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="errors_pkey"),
    )
    op.create_index("ix_errors_call_sid", "errors", ["call_sid"])


def downgrade() -> None:
    for table in ("errors", "slots", "transitions", "turns", "calls"):
        op.drop_table(table)
