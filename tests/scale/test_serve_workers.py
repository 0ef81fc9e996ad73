"""``voicefsm serve --workers N``: N processes on one port and one PostgreSQL, as one server.

The supervisor prints the banner once every worker listens; calls on the one port are taken by
the workers, each record naming the worker that ran it (``host:port/i``); a worker killed by
SIGKILL is started again under its name; SIGTERM drains them all and the supervisor exits 0.
SQLite is refused with one line.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from cli.test_cli import clean_env
from standin import FLOW, STARTUP_TIMEOUT_S, TwilioStandIn, Worker, poll

from voicefsm.records import CallStore

READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:(\d+))")
WORKERS = re.compile(r"workers +2 processes on this port: (\S+)/1 \.\.\. (\S+)/2")
ANSWERS = {"ask_size": "1", "ask_crust": "2"}


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_serve_workers_2_on_postgresql_takes_calls_restarts_a_killed_worker_and_drains(
    tmp_path: Path, postgres_url: str
) -> None:
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicefsm", "serve", str(FLOW), "--stt", "scripted", "--tts", "scripted",
            "--workers", "2", "--port", "0", "--db", postgres_url,
            cwd=tmp_path, env=clean_env(VOICEFSM_RECORDINGS_DIR=""),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert supervisor.stdout is not None
            banner = ""
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while not WORKERS.search(banner):
                    line = (await supervisor.stdout.readline()).decode()
                    assert line, f"serve --workers exited:\n{stderr_path.read_text()}"
                    banner += line
            ready = READY.search(banner)
            assert ready is not None, banner
            assert banner.count("voicefsm serving") == 1  # one banner for the server, not one per worker
            base = WORKERS.search(banner).group(1)  # type: ignore[union-attr]
            assert base.endswith(f":{ready.group(2)}")
            first = children(supervisor.pid)
            assert len(first) == 2

            async with httpx.AsyncClient(base_url=ready.group(1), timeout=10) as http:
                assert (await http.get("/healthz")).json()["status"] == "ok"
                served = Worker(base, _Served(ready.group(1)), http)  # type: ignore[arg-type]
                standin = TwilioStandIn([served])
                traces = await asyncio.gather(
                    *(standin.call(f"CA{n:032d}", served, served, ANSWERS) for n in range(4))
                )
                assert all(trace.ended for trace in traces)

                await ended_in_records(postgres_url, 4)  # their ends land just after (writer queues)
                killed = first[0]
                os.kill(killed, signal.SIGKILL)

                async def restarted() -> list[int]:
                    return children(supervisor.pid)

                now = await poll(
                    restarted, lambda pids: len(pids) == 2 and killed not in pids, "a new worker", 30
                )
                await poll(
                    lambda: _said(stderr_path),
                    lambda text: "is taking calls again" in text,
                    "the restarted worker to be ready",
                    STARTUP_TIMEOUT_S,
                )
                # The restarted worker takes calls again (whichever worker the kernel hands them to).
                again = await asyncio.gather(
                    *(standin.call(f"CA{n:032d}", served, served, ANSWERS) for n in range(4, 8))
                )
                assert all(trace.ended for trace in again)
                assert now != first

            supervisor.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await supervisor.wait() == 0
        finally:
            if supervisor.returncode is None:
                supervisor.kill()
                await supervisor.wait()
    assert not [pid for pid in first + now if _alive(pid)], "a worker outlived its supervisor"
    said = await _said(stderr_path)
    assert re.search(rf"worker {re.escape(base)}/[12] exited \(killed by SIGKILL\); restarting it", said), (
        said
    )

    store = await CallStore.open(postgres_url, migrate="check")
    try:
        records = await store.list_calls(100)
    finally:
        await store.aclose()
    assert len(records) == 8
    assert all(r.outcome == "completed" for r in records), [
        (r.call_sid[-1], r.outcome, r.worker) for r in records
    ]
    assert {r.worker for r in records} <= {f"{base}/1", f"{base}/2"}


async def ended_in_records(url: str, count: int) -> None:
    store = await CallStore.open(url, migrate="check")
    try:
        await poll(
            lambda: store.list_calls(100),
            lambda calls: len(calls) == count and all(c.outcome for c in calls),
            f"{count} ended calls in the records",
            timeout_s=15,
        )
    finally:
        await store.aclose()


async def _said(path: Path) -> str:
    return await asyncio.to_thread(path.read_text, errors="replace")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


class _Served:
    """Just what the stand-in needs of a served worker: its URLs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://", 1)


def test_serve_workers_on_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voicefsm", "serve", str(FLOW), "--workers", "3", "--port", "0"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --workers 3 needs the call records in PostgreSQL")
    assert "--db postgresql://" in lines[0] and "--workers 1" in lines[0]
    assert not (tmp_path / "voicefsm.db").exists()  # refused before anything was opened


def test_serve_workers_on_an_unreachable_database_says_so_once(tmp_path: Path) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/voicefsm"  # nothing listens on port 1
    command = [sys.executable, "-m", "voicefsm", "serve", str(FLOW), "--workers", "2", "--port", "0"]
    done = subprocess.run(
        [*command, "--db", unreachable],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # the supervisor's check, not one line per worker
    assert lines[0].startswith(f"error: cannot open the call records at {unreachable}")
