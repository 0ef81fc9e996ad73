"""The campaign schema: the queue engine's tables (procrastinate's own SQL) and ours (Alembic).

Both are brought up to date when a campaign service opens, one process at a time (a transaction-scoped
advisory lock), so workers starting together on a new database create everything once. The campaign
tables have their own Alembic chain and version table (``voicefsm_campaign_schema_version``): they live
only where the queue runs (PostgreSQL), while the call records may be on SQLite.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from voicefsm.campaigns.tables import CampaignBase

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "voicefsm_campaign_schema_version"
#: pg_advisory_xact_lock key ("vfsmcamp" in ASCII): one campaign schema change at a time per database.
ADVISORY_LOCK_KEY = 0x7666736D63616D70
LOCK_WAIT_S = 30


def migration_options() -> dict[str, Any]:
    """The options of every campaign migration context."""

    def ours(name: str | None, kind: str, _parent: object) -> bool:
        return kind != "table" or name in CampaignBase.metadata.tables

    return {
        "target_metadata": CampaignBase.metadata,
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "include_name": ours,
    }


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest campaign revision this voicefsm ships."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its revisions
        raise RuntimeError(f"no campaign revisions in {MIGRATIONS}; the install is incomplete")
    return head


def _has_queue(connection: Connection) -> bool:
    return "procrastinate_jobs" in inspect(connection).get_table_names()


def _upgrade(connection: Connection) -> None:
    command.upgrade(_config(connection), "head")


async def prepare_campaign_schema(engine: AsyncEngine, queue_schema: str) -> None:
    """Create or upgrade the queue's tables (``queue_schema``: procrastinate's SQL) and ours."""
    async with engine.begin() as connection:
        await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        if not await connection.run_sync(_has_queue):
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.execute(queue_schema)  # asyncpg runs a multi-statement script as one simple query
        await connection.run_sync(_upgrade)
