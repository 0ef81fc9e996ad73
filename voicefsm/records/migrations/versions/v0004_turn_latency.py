"""A caller turn's latency, by stage: seven nullable columns at the end of ``turns``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Frozen: a revision never imports voicefsm's current tables. Batch mode, so SQLite (which cannot
add several columns in one ALTER) and PostgreSQL take the same steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("commit_ms", "parse_ms", "transition_ms", "first_audio_ms", "tts_first_byte_ms")


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tts_source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("prefetched", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("prefetched")
        batch.drop_column("tts_source")
        for name in reversed(COLUMNS):
            batch.drop_column(name)
