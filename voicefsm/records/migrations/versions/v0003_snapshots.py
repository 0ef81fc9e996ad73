"""Flow snapshots: the latest state, slots and counters of each live call's flow, for resuming it.

Revision ID: 0003
Revises: 0002 (workers; branch scale holds both: one head. The lead chains 0003 -> 0004 at the merge)
Create Date: 2026-12-07

Frozen: a revision never imports voicefsm's current tables. A new table only: no ALTER, so SQLite
needs no batch copy and both dialects run the same operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_snapshots",
        sa.Column("call_sid", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", name="call_snapshots_pkey"),
    )
    op.create_index("ix_call_snapshots_updated_at", "call_snapshots", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_call_snapshots_updated_at", table_name="call_snapshots")
    op.drop_table("call_snapshots")
