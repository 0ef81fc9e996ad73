"""Shared fixtures: every test must leave no asyncio task behind; records databases on both backends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pgcluster import Cluster, PostgresUnavailable, start_cluster


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail a test that leaves a task running after it (and its fixtures) finished."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leftover = {task for task in asyncio.all_tasks() - before if task is not current and not task.done()}
    if leftover:
        # Tasks cancelled during teardown may need a turn of the loop to finish; wait for them, bounded.
        _, still_running = await asyncio.wait(leftover, timeout=2.0)
        names = sorted(task.get_name() for task in still_running)
        assert not still_running, f"tasks left running after the test: {names}"


# -- databases: the embedded SQLite default and a real, throwaway PostgreSQL (tests/pgcluster.py) ----------

POSTGRES_TEST_DATABASE = "voicefsm_tests"


def _postgres_required() -> bool:
    """Under CI, and in scripts/test.sh (which installs the server), a missing PostgreSQL fails the run."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "VOICEFSM_REQUIRE_POSTGRES"))
    return any(flag in {"1", "true", "yes"} for flag in flags)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One PostgreSQL server for the whole run; skipped where none can start, unless it is required."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        message = f"no PostgreSQL for the tests: {exc}"
        if _postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        cluster.create_database(POSTGRES_TEST_DATABASE)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """The URL of an empty PostgreSQL database (emptied before each test: faster than a new database)."""
    postgres_cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{POSTGRES_TEST_DATABASE}' AND pid <> pg_backend_pid()"
    )
    postgres_cluster.sql(
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT ALL ON SCHEMA public TO public",
        POSTGRES_TEST_DATABASE,
    )
    return postgres_cluster.url(POSTGRES_TEST_DATABASE)


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty records database, once on each backend: a SQLite file (in a new folder) and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'records.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
