"""The records' schema is Alembic's: made by the shipped revisions, checked and upgraded at start as
voicefsm/records/migrate.py says, on SQLite and on a real PostgreSQL alike."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import logging
import shutil
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from voicefsm.records import (
    CallStore,
    DatabaseUrlError,
    SchemaError,
    StoreUnavailableError,
    database_url,
    upgrade_database,
)
from voicefsm.records import migrate as migrate_module
from voicefsm.records.migrate import (
    INITIAL_REVISION,
    MIGRATIONS,
    VERSION_TABLE,
    head_revision,
    migration_options,
)
from voicefsm.records.tables import Base

CALL = "CA00000000000000000000000000000001"
#: The newest revision this voicefsm ships; the tests' "newer voicefsm" adds 9998 on top of it.
HEAD = head_revision()
NEWER = "9998"

# A revision a newer voicefsm would ship: one more column on calls.
ADD_COLUMN = """
import sqlalchemy as sa
from alembic import op

revision = "9998"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite, alter_column copies the table and drops the old one, which turns, slots... refer to.
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("campaign", sa.String(64), nullable=True))
        batch.alter_column("outcome", type_=sa.String(128), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.alter_column("outcome", type_=sa.String(64), existing_nullable=True)
        batch.drop_column("campaign")
"""

# A revision that fails half-way: its first statement succeeds, its second cannot.
FAILS_HALF_WAY = """
import sqlalchemy as sa
from alembic import op

revision = "9998"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade() -> None:
    op.drop_table("half_done")
"""


def newer_voicefsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str = ADD_COLUMN) -> None:
    """From now on, this process is a voicefsm whose migrations end with ``revision``."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "v9998_newer.py").write_text(revision.replace("{head}", HEAD))
    monkeypatch.setattr(migrate_module, "MIGRATIONS", folder)


async def in_database(url: str, look: Any) -> Any:
    """Run ``look(connection)`` on a plain connection to ``url`` (not through a store)."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


def version_of(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def tables_of(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def columns_of_calls(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("calls")}


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts=migration_options())
    return list(compare_metadata(context, Base.metadata))


def initial_columns() -> dict[str, set[str]]:
    """The tables and columns of the initial revision (what create_all made before migrations)."""
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            command.upgrade(migrate_module.alembic_config(connection), INITIAL_REVISION)
            found = inspect(connection)
            return {
                name: {column["name"] for column in found.get_columns(name)}
                for name in found.get_table_names()
                if name != VERSION_TABLE
            }
    finally:
        engine.dispose()


def as_before_migrations(connection: Connection) -> None:
    """The tables as voicefsm made them with create_all before it had migrations (no constraint names)."""
    legacy = MetaData()
    initial = initial_columns()
    for table in Base.metadata.sorted_tables:
        if table.name not in initial:
            continue  # added by a later revision
        copy = table.to_metadata(legacy)
        for column in [c for c in copy.columns if c.name not in initial[table.name]]:
            copy._columns.remove(column)  # added by a later revision, as were its indexes
            copy.indexes = {i for i in copy.indexes if column.name not in {c.name for c in i.columns}}
        for constraint in copy.constraints:
            constraint.name = None
        for index in copy.indexes:  # create_all named the indexes as the migrations do
            assert index.name is not None
    legacy.create_all(connection)
    connection.execute(
        text(
            "INSERT INTO calls (call_sid, flow, direction, started_at) "
            "VALUES (:sid, 'booking', 'inbound', :at)"
        ),
        {"sid": CALL, "at": dt.datetime(2025, 3, 1, 9, 0)},
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'records.db'}"


async def test_a_new_database_gets_exactly_the_tables_the_code_writes(records_url: str) -> None:
    store = await CallStore.open(records_url)
    try:
        assert store.schema is not None
        assert (store.schema.before, store.schema.after, store.schema.action) == (None, HEAD, "created")
        assert await store.call_started(CALL, flow="booking", caller=None)
    finally:
        await store.aclose()

    assert await in_database(records_url, differences) == []  # the initial revision == tables.py
    assert await in_database(records_url, version_of) == HEAD
    reopened = await CallStore.open(records_url, migrate="check")
    try:
        assert reopened.schema is not None and reopened.schema.action == "none"
    finally:
        await reopened.aclose()


async def test_tables_made_before_migrations_are_stamped_and_kept(records_url: str) -> None:
    await in_database(records_url, as_before_migrations)

    report = await upgrade_database(records_url)  # what `serve` does itself on SQLite
    store = await CallStore.open(records_url)
    try:
        assert store.schema is not None and store.schema.action == "none"
        kept = await store.get_call(CALL)
    finally:
        await store.aclose()

    expected = "stamped" if HEAD == INITIAL_REVISION else "upgraded"
    assert (report.before, report.after, report.action) == (
        None if HEAD == INITIAL_REVISION else INITIAL_REVISION,
        HEAD,
        expected,
    )
    assert kept is not None and kept.flow == "booking"
    assert await in_database(records_url, version_of) == HEAD
    assert await in_database(records_url, differences) == []


async def test_check_changes_nothing_and_says_which_command_to_run(records_url: str) -> None:
    with pytest.raises(SchemaError) as caught:
        await CallStore.open(records_url, migrate="check")

    assert "have no voicefsm tables yet" in str(caught.value)
    assert "run `voicefsm db upgrade --db " in str(caught.value)
    assert await in_database(records_url, tables_of) & set(Base.metadata.tables) == set()


async def test_a_postgresql_database_behind_is_refused_until_db_upgrade(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await CallStore.open(postgres_url)
    await first.call_started(CALL, flow="booking", caller=None)
    await first.aclose()
    newer_voicefsm(tmp_path, monkeypatch)

    with pytest.raises(SchemaError) as caught:
        await CallStore.open(postgres_url)

    message = str(caught.value)
    assert f"are at schema revision {HEAD}, behind this voicefsm's {NEWER}" in message
    assert f"run `voicefsm db upgrade --db {postgres_url}` once" in message
    assert "\n" not in message
    assert "campaign" not in await in_database(postgres_url, columns_of_calls)

    report = await upgrade_database(postgres_url)

    assert (report.before, report.after, report.action) == (HEAD, NEWER, "upgraded")
    assert "campaign" in await in_database(postgres_url, columns_of_calls)
    store = await CallStore.open(postgres_url)
    try:
        assert store.schema is not None and store.schema.action == "none"
        assert await store.get_call(CALL) is not None
    finally:
        await store.aclose()


async def test_a_sqlite_file_behind_is_upgraded_at_start_and_keeps_its_records(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = await CallStore.open(sqlite_url)
    await first.call_started(CALL, flow="booking", caller=None)
    await first.turn(CALL, speaker="agent", text="Hello", started_at=dt.datetime.now(dt.UTC))
    await first.slot(CALL, "party", 2)
    await first.aclose()
    newer_voicefsm(tmp_path, monkeypatch)

    with caplog.at_level(logging.WARNING, logger="voicefsm.records"):
        store = await CallStore.open(sqlite_url)
    try:
        assert store.schema is not None
        assert (store.schema.before, store.schema.after, store.schema.action) == (HEAD, NEWER, "upgraded")
        kept = await store.get_call(CALL)
        await store.turn(CALL, speaker="caller", text="two", started_at=dt.datetime.now(dt.UTC))
        async with store.engine.connect() as connection:
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    finally:
        await store.aclose()
    assert "campaign" in await in_database(sqlite_url, columns_of_calls)
    assert kept is not None and [t.text for t in kept.transcript] == ["Hello"] and kept.slots == {"party": 2}
    assert foreign_keys == 1  # on again for the store's own connections
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"upgraded the call records at {sqlite_url} from schema {HEAD} to {NEWER}")
    ]


async def test_a_revision_that_fails_half_way_leaves_the_database_as_it_was(
    records_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await CallStore.open(records_url)).aclose()  # at HEAD
    newer_voicefsm(tmp_path, monkeypatch, FAILS_HALF_WAY)

    with pytest.raises(StoreUnavailableError) as caught:
        await upgrade_database(records_url)

    assert "no_such_table" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "half_done" not in await in_database(records_url, tables_of)
    assert await in_database(records_url, version_of) == HEAD


async def test_a_database_from_a_newer_voicefsm_is_refused(records_url: str) -> None:
    await (await CallStore.open(records_url)).aclose()

    def from_the_future(connection: Connection) -> None:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))

    await in_database(records_url, from_the_future)

    for mode in ("auto", "upgrade"):
        with pytest.raises(SchemaError) as caught:
            await CallStore.open(records_url, migrate=mode)
        assert f"revision 0099, which this voicefsm does not know (its newest is {HEAD})" in str(caught.value)
        assert "upgrade voicefsm" in str(caught.value)


async def test_some_but_not_all_tables_without_a_version_are_refused(records_url: str) -> None:
    def only_calls(connection: Connection) -> None:
        Base.metadata.tables["calls"].create(connection)

    await in_database(records_url, only_calls)

    with pytest.raises(SchemaError) as caught:
        await CallStore.open(records_url)

    assert "have some of voicefsm's tables (calls) but not all" in str(caught.value)
    assert await in_database(records_url, tables_of) & set(Base.metadata.tables) == {"calls"}


async def test_workers_starting_together_on_a_new_database_create_it_once(records_url: str) -> None:
    child = textwrap.dedent(
        f"""
        import asyncio
        from voicefsm.records import CallStore

        async def main():
            store = await CallStore.open({records_url!r})
            print(store.schema.action, flush=True)
            await store.aclose()

        asyncio.run(main())
        """
    )
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", child, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(60):
        ended = [await worker.communicate() for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], [err.decode() for _, err in ended]
    outputs = [out.decode().strip() for out, _ in ended]
    assert sorted(outputs) == ["created", "none", "none", "none"]


@pytest.mark.parametrize(
    ("typed", "mapped"),
    [
        ("sqlite:///calls.db", "sqlite+aiosqlite:///calls.db"),
        ("sqlite:////var/lib/voicefsm/calls.db", "sqlite+aiosqlite:////var/lib/voicefsm/calls.db"),
        ("sqlite+aiosqlite:///calls.db", "sqlite+aiosqlite:///calls.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:pw@db.example:5432/calls", "postgresql+asyncpg://u:pw@db.example:5432/calls"),
        ("postgres://u:pw@db.example/calls", "postgresql+asyncpg://u:pw@db.example/calls"),
        (
            "postgresql+asyncpg://db.example/calls?ssl=require",
            "postgresql+asyncpg://db.example/calls?ssl=require",
        ),
        (" postgres://db.example/calls ", "postgresql+asyncpg://db.example/calls"),
    ],
)
def test_urls_as_users_type_them_run_on_the_async_drivers(typed: str, mapped: str) -> None:
    assert database_url(typed).render_as_string(hide_password=False) == mapped


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("nonsense", "'nonsense': it is not a database URL"),
        ("postgresql//u:hunter2@db/calls", "'postgresql//u:***@db/calls': it is not a database URL"),
        ("mysql://u:hunter2@db/calls", "not 'mysql'"),
        ("postgresql+psycopg2://u:hunter2@db/calls", "its driver psycopg2 does not run under asyncio"),
        ("sqlite+pysqlite:///calls.db", "its driver pysqlite does not run under asyncio"),
    ],
)
async def test_a_url_that_cannot_be_used_is_one_line_naming_the_setting_and_an_example(
    typed: str, says: str
) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        await CallStore.open(typed)

    message = str(caught.value)
    assert says in message
    assert message.startswith("--db / VOICEFSM_DB_URL is ")
    assert "write a URL like sqlite:///voicefsm.db or postgresql://" in message
    assert "hunter2" not in message and "\n" not in message


async def test_a_postgres_url_as_hosting_platforms_give_it_opens(postgres_url: str) -> None:
    store = await CallStore.open(postgres_url.replace("postgresql://", "postgres://", 1))
    try:
        assert store.engine.dialect.driver == "asyncpg"
        await store.ping()
    finally:
        await store.aclose()


def test_every_migration_file_that_is_not_python_is_declared_as_package_data() -> None:
    # Python files ship as modules; the rest (the revision template, alembic.ini) only if pyproject says so.
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["voicefsm"]
    package = MIGRATIONS.parents[1]
    data = [
        path.relative_to(package).as_posix()
        for path in MIGRATIONS.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    ]

    assert sorted(data) == ["records/migrations/alembic.ini", "records/migrations/script.py.mako"]
    assert [name for name in data if not any(fnmatch.fnmatch(name, p) for p in patterns)] == []
