"""Many workers on one database: who runs each call and until when (a lease), and stream tickets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

Frozen: a revision never imports voicefsm's current tables. ``calls`` gets ``worker`` and
``lease_until`` (nullable: calls recorded before this revision have neither, and count as lapsed);
``stream_tickets`` holds the single-use tickets of the media streams, verifiable by every worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_calls_lease_until", "calls", ["lease_until"])

    op.create_table(
        "stream_tickets",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("call_sid", sa.String(length=128), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(length=255), nullable=True),
        sa.Column("issued_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="stream_tickets_pkey"),
    )
    op.create_index("ix_stream_tickets_call_sid", "stream_tickets", ["call_sid"])
    op.create_index("ix_stream_tickets_expires_at", "stream_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stream_tickets_expires_at", table_name="stream_tickets")
    op.drop_index("ix_stream_tickets_call_sid", table_name="stream_tickets")
    op.drop_table("stream_tickets")
    op.drop_index("ix_calls_lease_until", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("worker")
