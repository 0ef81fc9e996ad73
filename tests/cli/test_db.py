"""``voicefsm db upgrade`` and how ``voicefsm serve`` treats its records database, as a user runs them:
subprocesses in a temporary directory, on SQLite and on a real PostgreSQL (tests/pgcluster.py)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from voicefsm.records.migrate import MIGRATIONS, head_revision

REPO = Path(__file__).resolve().parents[2]
BOOKING = REPO / "flows" / "booking.py"
TIMEOUT_S = 30
HEAD = head_revision()
#: Issue 16: a database that cannot be opened or migrated stops serve within seconds.
FAILS_WITHIN_S = 5.0
READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:\d+)")

# Run the CLI as a newer voicefsm would be: its migrations end with one more revision.
NEWER_VOICEFSM = """
import sys
from pathlib import Path
from voicefsm.records import migrate
migrate.MIGRATIONS = Path(sys.argv[1])
sys.argv = ["voicefsm", *sys.argv[2:]]
from voicefsm.cli import main
main()
"""
REVISION_NEWER = """
import sqlalchemy as sa
from alembic import op

revision = "9998"
down_revision = "{head}"


def upgrade() -> None:
    op.add_column("calls", sa.Column("campaign", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "campaign")
"""


def environment() -> dict[str, str]:
    """The environment without credentials or voicefsm settings."""
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def voicefsm(cwd: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-m", "voicefsm", *args] if code is None else [sys.executable, "-c", code, *args]
    )
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed, after checking it printed only that (no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_db_upgrade_creates_a_sqlite_file_then_finds_it_up_to_date(tmp_path: Path) -> None:
    created = voicefsm(tmp_path, "db", "upgrade", "--db", "sqlite:///calls.db")
    again = voicefsm(tmp_path, "db", "upgrade", "--db", "sqlite:///calls.db")

    assert (created.returncode, created.stdout.strip()) == (
        0,
        f"created the call records at sqlite:///calls.db (schema {HEAD})",
    )
    assert (tmp_path / "calls.db").is_file()
    assert (again.returncode, again.stdout.strip()) == (
        0,
        f"the call records at sqlite:///calls.db are up to date (schema {HEAD})",
    )


def test_serve_with_a_url_that_is_not_a_database_url_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    started = time.monotonic()
    done = voicefsm(tmp_path, "serve", str(BOOKING), "--port", "0", "--db", "nonsense")

    assert time.monotonic() - started < FAILS_WITHIN_S + 5  # interpreter start-up included
    assert done.returncode == 2
    line = one_error_line(done)
    assert "--db / VOICEFSM_DB_URL is 'nonsense': it is not a database URL" in line
    assert "sqlite:///voicefsm.db" in line


def test_serve_with_a_postgresql_server_that_is_not_there_stops_within_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = voicefsm(
        tmp_path,
        "serve",
        str(BOOKING),
        "--port",
        "0",
        "--db",
        "postgresql://voicefsm:hunter2@127.0.0.1:1/calls",
    )

    assert time.monotonic() - started < FAILS_WITHIN_S + 5
    assert done.returncode == 2
    line = one_error_line(done)
    assert "cannot open the call records at postgresql://voicefsm:***@127.0.0.1:1/calls" in line
    assert "hunter2" not in done.stdout + done.stderr


async def test_db_upgrade_then_serve_on_postgresql_answers_and_reads_its_records(
    tmp_path: Path, postgres_url: str
) -> None:
    upgraded = voicefsm(tmp_path, "db", "upgrade", "--db", postgres_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"created the call records at {postgres_url} (schema {HEAD})"

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicefsm", "serve", str(BOOKING), "--port", "0", "--db", postgres_url,
        cwd=tmp_path, env=environment(), stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT_S):
            banner = ""
            while not (ready := READY.search(banner)):
                line = await process.stdout.readline()
                assert line, f"serve exited: {banner}"
                banner += line.decode()
        async with httpx.AsyncClient(base_url=ready.group(1), timeout=10) as http:
            health = (await http.get("/healthz")).json()
            calls = (await http.get("/api/calls")).json()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            _, errors = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert health["status"] == "ok"
    assert calls == []
    assert process.returncode == 0, errors.decode()
    assert not (tmp_path / "voicefsm.db").exists()  # the records went to PostgreSQL, not the default


def test_serve_refuses_a_postgresql_schema_behind_with_the_command_and_db_upgrade_fixes_it(
    tmp_path: Path, postgres_url: str
) -> None:
    assert voicefsm(tmp_path, "db", "upgrade", "--db", postgres_url).returncode == 0  # at HEAD
    newer = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "v9998_campaign.py").write_text(REVISION_NEWER.replace("{head}", HEAD))

    started = time.monotonic()
    refused = voicefsm(
        tmp_path, str(newer), "serve", str(BOOKING), "--port", "0", "--db", postgres_url, code=NEWER_VOICEFSM
    )
    took = time.monotonic() - started
    upgraded = voicefsm(tmp_path, str(newer), "db", "upgrade", "--db", postgres_url, code=NEWER_VOICEFSM)

    assert refused.returncode == 2
    assert took < FAILS_WITHIN_S + 5
    line = one_error_line(refused)
    assert f"are at schema revision {HEAD}, behind this voicefsm's 9998" in line
    assert f"run `voicefsm db upgrade --db {postgres_url}` once" in line
    assert (upgraded.returncode, upgraded.stdout.strip()) == (
        0,
        f"upgraded the call records at {postgres_url} from schema {HEAD} to 9998",
    )
