"""Campaigns: campaigns, their contacts and each dial attempt.

Revision ID: c0001
Revises:
Create Date: 2026-12-07

Frozen: a revision never imports voicefsm's current tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "voicefsm_campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("flow", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        _at("next_dial_at"),
        _at("last_dial_at", nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_backoff_s", sa.Float(), nullable=False),
        sa.Column("window_start", sa.String(length=5), nullable=False),
        sa.Column("window_end", sa.String(length=5), nullable=False),
        sa.Column("default_timezone", sa.String(length=64), nullable=False),
        sa.Column("machine_detection", sa.Boolean(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="voicefsm_campaigns_pkey"),
    )
    op.create_table(
        "voicefsm_campaign_contacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _at("next_attempt_at", nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("answered_by", sa.String(length=32), nullable=True),
        sa.Column("call_sid", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["voicefsm_campaigns.id"], name="voicefsm_campaign_contacts_campaign_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="voicefsm_campaign_contacts_pkey"),
    )
    op.create_index(
        "ix_voicefsm_campaign_contacts_campaign_state", "voicefsm_campaign_contacts", ["campaign_id", "state"]
    )
    op.create_table(
        "voicefsm_campaign_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("answered_by", sa.String(length=32), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=False),
        _at("placed_at"),
        _at("ended_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["voicefsm_campaign_contacts.id"],
            name="voicefsm_campaign_attempts_contact_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["voicefsm_campaigns.id"], name="voicefsm_campaign_attempts_campaign_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="voicefsm_campaign_attempts_pkey"),
    )
    op.create_index("ix_voicefsm_campaign_attempts_contact_id", "voicefsm_campaign_attempts", ["contact_id"])
    op.create_index("ix_voicefsm_campaign_attempts_call_sid", "voicefsm_campaign_attempts", ["call_sid"])


def downgrade() -> None:
    for table in ("voicefsm_campaign_attempts", "voicefsm_campaign_contacts", "voicefsm_campaigns"):
        op.drop_table(table)
