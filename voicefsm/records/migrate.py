"""The records' schema, kept by Alembic: the revisions ship in ``voicefsm/records/migrations/``.

What is done when a store opens (``CallStore.open(url, migrate=...)``), decided once here:

- ``"auto"`` (what ``voicefsm serve`` does): a database without voicefsm's tables is created at the
  newest revision (nothing to lose); a SQLite file behind is upgraded in place (one process owns the
  file, and its DDL is inside the same ``BEGIN IMMEDIATE`` transaction, so a failed upgrade changes
  nothing); a PostgreSQL database behind is refused with the command to run, because other workers,
  possibly still on the previous voicefsm, share it, and the operator chooses when its schema moves.
- ``"check"``: nothing is changed; anything but the newest revision is refused.
- ``"upgrade"`` (``voicefsm db upgrade``): upgraded to the newest revision, whatever the backend.

Tables that voicefsm created before it had migrations (all five tables, no version row) are today's
initial revision: they are stamped ``0001``, not recreated. A database at a revision this voicefsm does
not know (written by a newer one) is always refused. The version is kept in its own table,
``voicefsm_schema_version``, so a PostgreSQL database shared with an application that has its own
Alembic history is not confused with it. Concurrent starts are serialised: a transaction-scoped advisory
lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, and a lock per event loop in this process (Alembic's
``op`` and ``context`` are module globals).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from voicefsm.records.errors import SchemaError
from voicefsm.records.tables import Base, UtcDateTime

MigrateMode = Literal["auto", "check", "upgrade"]
MIGRATE_MODES: tuple[MigrateMode, ...] = ("auto", "check", "upgrade")

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "voicefsm_schema_version"
#: The revision equal to the tables voicefsm created before it had migrations.
INITIAL_REVISION = "0001"
TABLES = frozenset(Base.metadata.tables)
#: The tables of the initial revision: what voicefsm made before it had migrations (later ones add more).
INITIAL_TABLES = frozenset({"calls", "turns", "transitions", "slots", "errors"})
#: pg_advisory_xact_lock key ("voicefsm" in ASCII): one schema change at a time per PostgreSQL database.
ADVISORY_LOCK_KEY = 0x766F69636566736D
#: How long a start waits for another process's schema change before giving up with a clear line.
LOCK_WAIT_S = 30

Action = Literal["none", "created", "stamped", "upgraded"]

_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """What opening the records did to their schema: the revision before (None: none) and after."""

    before: str | None
    after: str
    action: Action

    def describe(self, where: str) -> str:
        """One line for the operator: what was done to the records at ``where`` (a masked URL)."""
        return {
            "created": f"created the call records at {where} (schema {self.after})",
            "stamped": f"recorded schema {self.after} for the existing call records at {where}",
            "upgraded": f"upgraded the call records at {where} from schema {self.before} to {self.after}",
            "none": f"the call records at {where} are up to date (schema {self.after})",
        }[self.action]


def _render_item(kind: str, item: object, _context: object) -> str | Literal[False]:
    # A revision is frozen: write UtcDateTime as the column type under it, not as an import of today's code.
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _ours(name: str | None, kind: str, _parent: object) -> bool:
    # The database may be shared with an application: autogenerate compares voicefsm's tables only.
    return kind != "table" or name in Base.metadata.tables


def migration_options() -> dict[str, Any]:
    """The options every migration context gets (``env.py`` and the programmatic path alike)."""
    return {
        "target_metadata": Base.metadata,
        "version_table": VERSION_TABLE,
        # SQLite alters a table by copying it; batch mode does that there and plain ALTERs elsewhere.
        "render_as_batch": True,
        "compare_type": True,
        "render_item": _render_item,
        "include_name": _ours,
    }


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the shipped revisions; ``connection`` is the one env.py uses."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts_in(folder: Path) -> ScriptDirectory:
    return ScriptDirectory(str(folder))


def _scripts() -> ScriptDirectory:
    return _scripts_in(MIGRATIONS)


def head_revision() -> str:
    """The newest revision this voicefsm ships."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships its revisions
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS}; the install is incomplete")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at, or None when it has no version row."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _prepare(connection: Connection, mode: MigrateMode, shown: str) -> SchemaReport:
    head = head_revision()
    present = INITIAL_TABLES & set(inspect(connection).get_table_names())
    before = current_revision(connection)
    run = f"run `voicefsm db upgrade --db {shown}`"
    if before is None:
        if present and present != INITIAL_TABLES:
            raise SchemaError(
                shown,
                f"have some of voicefsm's tables ({', '.join(sorted(present))}) but not all, and no "
                "schema version",
                "point --db at a new database, or restore the missing tables from a backup",
            )
        if not present:
            if mode == "check":
                raise SchemaError(shown, "have no voicefsm tables yet", run)
            command.upgrade(alembic_config(connection), "head")
            return SchemaReport(None, head, "created")
        if mode == "check":
            raise SchemaError(shown, "have no schema version (made before voicefsm had migrations)", run)
        # Made by create_all before voicefsm had migrations: exactly the initial revision's tables.
        command.stamp(alembic_config(connection), INITIAL_REVISION)
        if head == INITIAL_REVISION:
            return SchemaReport(None, head, "stamped")
        before = INITIAL_REVISION
    if before == head:
        return SchemaReport(before, head, "none")
    if not _known(before):
        raise SchemaError(
            shown,
            f"are at schema revision {before}, which this voicefsm does not know (its newest is {head}): "
            "a newer voicefsm wrote them",
            "upgrade voicefsm, or point --db at another database",
        )
    if mode == "check" or (mode == "auto" and connection.dialect.name != "sqlite"):
        raise SchemaError(
            shown,
            f"are at schema revision {before}, behind this voicefsm's {head}",
            f"{run} once (every worker sharing the database then runs on it)",
        )
    command.upgrade(alembic_config(connection), "head")
    return SchemaReport(before, head, "upgraded")


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    return lock


async def prepare_schema(
    engine: AsyncEngine, mode: MigrateMode = "auto", *, shown: str | None = None
) -> SchemaReport:
    """Bring ``engine``'s database to the newest revision as ``mode`` allows, or raise SchemaError.

    ``shown`` is the URL as messages name it (default: the engine's, password masked).

    Raises the driver's or Alembic's error when the database cannot be read or changed; the whole
    change is one transaction (nothing is left half-done).
    """
    if mode not in MIGRATE_MODES:
        raise ValueError(f"migrate={mode!r}; use one of {', '.join(map(repr, MIGRATE_MODES))}")
    shown = shown or engine.url.render_as_string(hide_password=True)
    async with _loop_lock():
        if engine.dialect.name == "sqlite":
            async with engine.connect() as connection:
                # The driver's own transaction handling begins only before DML; take the write lock
                # ourselves so the DDL and the version row commit (or roll back) together. SQLite's
                # procedure for schema changes: foreign keys off (a batch migration copies and drops
                # tables others refer to), checked before the commit, on again after.
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("PRAGMA foreign_keys=OFF")
                try:
                    await autocommit.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        report = await autocommit.run_sync(_prepare, mode, shown)
                        broken = (await autocommit.exec_driver_sql("PRAGMA foreign_key_check")).all()
                        if broken:
                            raise SchemaError(
                                shown,
                                f"would have {len(broken)} row(s) referring to rows that are gone after "
                                f"the upgrade to {report.after}, so it was rolled back",
                                "report this revision to voicefsm's maintainers",
                            )
                    except BaseException:
                        await autocommit.exec_driver_sql("ROLLBACK")
                        raise
                    await autocommit.exec_driver_sql("COMMIT")
                finally:
                    await autocommit.exec_driver_sql("PRAGMA foreign_keys=ON")
                return report
        async with engine.begin() as connection:
            await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            return await connection.run_sync(_prepare, mode, shown)
