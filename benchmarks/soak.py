"""Soak: many short calls through a real ``voicefsm serve`` process; nothing may grow but the records.

The server runs ``flows/reminder.py`` with scripted speech (``--stt scripted --tts scripted``), its
declared fake resources and a SQLite records file in a fresh folder, exactly as ``voicefsm serve``
does in dev mode (the benchmark harness's ``servers.py`` starts it). Each call is what Twilio does:
``POST /twilio/voice`` (the stream token), a Media Streams WebSocket with the campaign row as
parameters (``name``, ``day``, ``time``), the phone echoing marks at once; once the question has
been asked the callee presses 1 and the flow confirms through its step and hangs up. Calls run
``--concurrency`` at a time.

The server is measured while it is idle (no live call, every record written) at three points: once
started, after ``--warmup`` calls (so what the first calls allocate once, caches, pools, imports,
does not count as growth) and after all calls; and at every ``--checkpoint`` calls on the way, for
the RSS trend. Reported: open file descriptors, asyncio tasks (``/healthz``), threads, RSS, and the
rows of every records table. The soak passes when, from the warm-up to the end, descriptors and tasks
are unchanged; threads (besides the step pool's, counted apart: it fills up to its 16 whenever a
burst of steps needs one more) and RSS did not grow over the second half of the checkpoints (threads
come from bounded pools that start empty and fill as load needs them: the step pool, asyncio's
default executor; each new thread adds its stack and a malloc arena to the RSS, so both may still
rise after the warm-up, then stop): the RSS gained there is within the noise (``--rss-noise-kib``,
default 4 MiB: what glibc's arenas and CPython's allocator keep or return with no leak) and its
trend is under ``--rss-slope-kib`` (default 100 KiB per 1,000 calls, i.e. 100 bytes a call); every
call ended with the expected outcome, no call is left unfinished in the records, and the records
grew by the same number of rows for every call.

Usage: ``python benchmarks/soak.py --calls 10000`` (15 to 40 minutes on a shared 2-core machine);
``--out soak.json`` writes the figures as JSON. Exit status 0 when it passed, 1 when it did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import procstat
import servers
from websockets.asyncio.client import connect

from voicefsm.telephony.twilio.media import (
    connected_message,
    dtmf_message,
    mark_echo_message,
    start_message,
)

FLOW = servers.ROOT / "flows" / "reminder.py"
ROW = {"name": "Ada", "day": "2024-06-05", "time": "09:30"}
EXPECTED_OUTCOME = "confirmed"
CALL_TIMEOUT_S = 60.0
IDLE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The idle server at one point: what it holds, and the rows of its records."""

    calls_done: int
    fds: int
    tasks: int
    threads: int
    #: Of ``threads``, the step pool's (``/healthz``): it fills up to its bound as load needs it.
    step_threads: int
    rss_kib: int
    thread_names: dict[str, int]
    fd_kinds: dict[str, int]
    rows: dict[str, int]
    unfinished_calls: int
    at_s: float


@dataclass(slots=True)
class Soak:
    """A run's settings, samples and verdict."""

    calls: int
    warmup: int
    concurrency: int
    checkpoint: int
    rss_noise_kib: int
    rss_slope_kib: float
    samples: list[Sample] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: The server's first warnings and errors (its log is removed with its folder).
    server_warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    calls_per_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


# -- the server -------------------------------------------------------------------------------------


@contextlib.contextmanager
def served(folder: Path, *, recordings: bool) -> Any:
    """``voicefsm serve flows/reminder.py`` in ``folder`` on a free port; stopped (drained) on exit."""
    port = servers.free_port()
    argv = [sys.executable, "-m", "voicefsm", "serve", str(FLOW), "--stt", "scripted", "--tts", "scripted"]
    argv += ["--port", str(port)]
    env = servers.server_env("booking", folder)  # dev mode, SQLite in the folder, fake resources
    env["VOICEFSM_RECORDINGS_DIR"] = str(folder / "recordings") if recordings else ""
    env["VOICEFSM_PROMPT_CACHE_DIR"] = str(folder / "prompt-cache")
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = servers.Server("soak", process, port, log_path)
    try:
        servers.wait_ready(server)
        yield server
    finally:
        servers.stop(server)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open descriptors by what they are (socket, pipe, a file's name), to say which grew."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds[target.split(":")[0] if ":[" in target else os.path.basename(target)] += 1
    return dict(kinds)


def thread_names(pid: int) -> dict[str, int]:
    """The process's threads by name (a pool's threads share theirs), to say which kind grew."""
    names: Counter[str] = Counter()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/comm", encoding="utf-8") as comm:
            names[comm.read().strip()] += 1
    return dict(sorted(names.items()))


def record_rows(database: Path) -> tuple[dict[str, int], int]:
    """Rows of every table of the records file, and how many calls have no end yet."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {
            name: int(db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in sorted(tables)
        }
        unfinished = int(db.execute("SELECT count(*) FROM calls WHERE ended_at IS NULL").fetchone()[0])
    return rows, unfinished


async def idle_sample(
    server: servers.Server, http: httpx.AsyncClient, database: Path, calls_done: int, begin: float
) -> Sample:
    """Wait until no call is live and the records, descriptors and tasks stop changing, then read the
    server's figures (a socket the server has not closed yet, or a record not yet written, is not growth)."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    previous: tuple[object, ...] | None = None
    while True:
        health = (await http.get("/healthz")).json()
        rows, unfinished = record_rows(database)
        fds = open_fds(server.pid)
        current = (rows, unfinished, fds, health["asyncio_tasks"])
        settled = health["active_calls"] == 0 and unfinished == 0 and current == previous
        if settled or time.monotonic() > deadline:
            break
        previous = current
        await asyncio.sleep(0.25)  # polling another process: the records writer flushes on its own time
    return Sample(
        calls_done=calls_done,
        fds=fds,
        tasks=int(health["asyncio_tasks"]),
        threads=procstat.status_kib(server.pid, "Threads"),  # a plain count, read like the kB fields
        step_threads=int(health["step_pool"]["threads"]),
        rss_kib=procstat.status_kib(server.pid, "VmRSS"),
        thread_names=thread_names(server.pid),
        fd_kinds=fd_kinds(server.pid),
        rows=rows,
        unfinished_calls=unfinished,
        at_s=round(time.monotonic() - begin, 3),
    )


# -- the callers ------------------------------------------------------------------------------------


async def one_call(server: servers.Server, http: httpx.AsyncClient, index: int) -> str | None:
    """One reminder call that confirms; None when it went as it should, else what went wrong.

    The phone is a bare ``websockets`` client speaking Media Streams as Twilio does (no compression,
    no pings): it echoes every mark at once, and presses 1 once two prompts (the greeting and the
    question) have played; the server hangs up after its goodbye.
    """
    call_sid, stream_sid = f"CA{index:032x}", f"MZ{index:032x}"
    sequence = itertools.count(1)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            webhook = await http.post(
                "/twilio/voice", data={"CallSid": call_sid, "From": "+15550009999", "To": "+15550001234"}
            )
            if webhook.status_code != 200 or 'name="token" value="' not in webhook.text:
                return f"webhook answered {webhook.status_code}"
            token = webhook.text.split('name="token" value="')[1].split('"')[0]
            parameters = {**ROW, "token": token}
            url = f"ws://127.0.0.1:{server.port}/twilio/stream"
            async with connect(url, compression=None, ping_interval=None, max_size=2**20) as phone:
                await phone.send(connected_message())
                await phone.send(start_message(stream_sid, call_sid, custom_parameters=parameters))
                marks = 0
                async for frame in phone:
                    if '"event":"mark"' not in frame and '"event": "mark"' not in frame:
                        continue  # audio (or a clear): played at once
                    name = json.loads(frame)["mark"]["name"]
                    await phone.send(mark_echo_message(stream_sid, name, sequence_number=next(sequence)))
                    marks += 1
                    if marks == 2:
                        await phone.send(dtmf_message(stream_sid, "1", sequence_number=next(sequence)))
            if phone.close_code not in (1000, 1001):
                return f"closed with {phone.close_code}"
    except TimeoutError:
        return "timed out"
    except Exception as error:  # counted and reported: one broken call must not stop the soak
        return f"{type(error).__name__}"
    return None


async def run_calls(
    server: servers.Server, http: httpx.AsyncClient, first: int, count: int, concurrency: int, soak: Soak
) -> None:
    numbers = iter(range(first, first + count))

    async def caller() -> None:
        for index in numbers:
            problem = await one_call(server, http, index)
            if problem is not None:
                soak.failures[problem] += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, count)):
            group.create_task(caller())


# -- the verdict ------------------------------------------------------------------------------------


def slope_per_1000(samples: Sequence[Sample]) -> float:
    """Least-squares slope of RSS (KiB) per 1,000 calls over ``samples``."""
    if len(samples) < 2:
        return 0.0
    xs = [sample.calls_done / 1000 for sample in samples]
    ys = [float(sample.rss_kib) for sample in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0


def judge(soak: Soak) -> None:
    start, warm, end = soak.samples[0], soak.samples[1], soak.samples[-1]
    problems = soak.problems
    if soak.failures:
        problems.append(f"calls failed: {dict(soak.failures)}")
    if soak.outcomes != {EXPECTED_OUTCOME: soak.calls + soak.warmup}:
        problems.append(f"outcomes {soak.outcomes}, expected all {EXPECTED_OUTCOME}")
    for name in ("fds", "tasks"):
        if getattr(end, name) != getattr(warm, name):
            problems.append(
                f"{name}: {getattr(warm, name)} after the warm-up, {getattr(end, name)} at the end"
            )
    # Threads come from bounded pools that start empty and fill as load needs them: the step pool (its
    # own count, up to its bound, whenever a burst needs one more) and asyncio's default executor
    # (cores + 4): the others may still grow after the warm-up, never in the second half.
    half = soak.samples[1:][len(soak.samples[1:]) // 2 :]
    if half and end.threads - end.step_threads > half[0].threads - half[0].step_threads:
        problems.append(
            f"threads besides the step pool's: {half[0].threads - half[0].step_threads} halfway, "
            f"{end.threads - end.step_threads} at the end"
        )
    # RSS: the pools above, and each new thread's stack and malloc arena, still fill after the warm-up
    # (they are bounded, so they stop); a leak grows with the calls. So the RSS is judged over the second
    # half: what it gained there must be noise, and its trend must be flat.
    if half:
        grown = end.rss_kib - half[0].rss_kib
        if grown > soak.rss_noise_kib:
            problems.append(
                f"RSS grew by {grown} KiB over the second half, "
                f"more than the noise ({soak.rss_noise_kib} KiB)"
            )
    later = soak.samples[1:]
    trend = slope_per_1000(later[len(later) // 2 :])
    if trend > soak.rss_slope_kib:
        problems.append(f"RSS trend {trend:.0f} KiB per 1,000 calls over the second half")
    if end.unfinished_calls:
        problems.append(f"{end.unfinished_calls} call(s) left unfinished in the records")
    per_call_warm = {name: warm.rows[name] - start.rows.get(name, 0) for name in warm.rows}
    per_call_end = {name: end.rows[name] - warm.rows.get(name, 0) for name in end.rows}
    for name in sorted(set(per_call_warm) | set(per_call_end)):
        a, b = per_call_warm.get(name, 0) / max(soak.warmup, 1), per_call_end.get(name, 0) / soak.calls
        if abs(a - b) > 1e-9:
            problems.append(f"table {name}: {a:g} rows per warm-up call but {b:g} per later call")


def report(soak: Soak) -> str:
    start, warm, end = soak.samples[0], soak.samples[1], soak.samples[-1]
    lines = [
        f"soak: {soak.calls} calls after a warm-up of {soak.warmup}, {soak.concurrency} at a time, "
        f"{soak.elapsed_s:.0f} s ({soak.calls_per_s:.1f} calls/s)",
        f"{'':14}{'started':>10}{'warmed up':>11}{'end':>10}{'growth':>9}",
    ]
    counts = ("fds", ""), ("tasks", ""), ("threads", ""), ("step_threads", ""), ("rss_kib", " KiB")
    for name, unit in counts:
        a, b, c = getattr(start, name), getattr(warm, name), getattr(end, name)
        lines.append(f"{name + unit:14}{a:>10}{b:>11}{c:>10}{c - b:>+9}")
    for table in sorted(end.rows):
        a, b, c = start.rows.get(table, 0), warm.rows.get(table, 0), end.rows[table]
        lines.append(f"{'rows ' + table:14}{a:>10}{b:>11}{c:>10}{c - b:>+9}  ({(c - b) / soak.calls:g}/call)")
    lines.append(
        "at each checkpoint (calls: RSS KiB / fds / tasks / threads (of them the step pool's)): "
        + ", ".join(
            f"{s.calls_done}: {s.rss_kib}/{s.fds}/{s.tasks}/{s.threads} ({s.step_threads})"
            for s in soak.samples[1:]
        )
    )
    later = soak.samples[1:]
    lines.append(
        f"RSS trend over the second half: {slope_per_1000(later[len(later) // 2 :]):+.0f} KiB per 1,000 calls"
    )
    lines.append(f"threads by name: warmed up {warm.thread_names}, end {end.thread_names}")
    if end.fds != warm.fds:
        lines.append(f"descriptors by kind: warmed up {warm.fd_kinds}, end {end.fd_kinds}")
    lines.append(f"outcomes: {soak.outcomes}; failed calls: {dict(soak.failures) or 'none'}")
    if soak.server_warnings:
        lines.append("the server's warnings and errors (first 40):\n  " + "\n  ".join(soak.server_warnings))
    lines.append("PASSED" if soak.passed else "FAILED:\n  " + "\n  ".join(soak.problems))
    return "\n".join(lines)


async def soak_run(args: argparse.Namespace) -> Soak:
    soak = Soak(
        args.calls, args.warmup, args.concurrency, args.checkpoint, args.rss_noise_kib, args.rss_slope_kib
    )
    folder = Path(tempfile.mkdtemp(prefix="voicefsm-soak-"))
    try:
        with served(folder, recordings=args.recordings) as server:
            database = folder / "records.db"
            # A new connection per request, as Twilio makes them: kept-alive client sockets would be
            # descriptors of the server that come and go with the client, not with the server.
            limits = httpx.Limits(max_connections=args.concurrency + 2, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.http_url, limits=limits, timeout=30) as http:
                begin = time.monotonic()
                soak.samples.append(await idle_sample(server, http, database, 0, begin))
                await run_calls(server, http, 0, args.warmup, args.concurrency, soak)
                soak.samples.append(await idle_sample(server, http, database, 0, begin))
                started = time.monotonic()
                done = 0
                while done < args.calls:
                    batch = min(args.checkpoint, args.calls - done)
                    await run_calls(server, http, args.warmup + done, batch, args.concurrency, soak)
                    done += batch
                    soak.samples.append(await idle_sample(server, http, database, done, begin))
                    print(f"  {done} calls, RSS {soak.samples[-1].rss_kib} KiB", file=sys.stderr, flush=True)
                soak.elapsed_s = time.monotonic() - started
                soak.calls_per_s = args.calls / soak.elapsed_s if soak.elapsed_s else 0.0
            log = (folder / "server.log").read_text(encoding="utf-8", errors="replace").splitlines()
            soak.server_warnings = [line for line in log if "WARNING" in line or "ERROR" in line][:40]
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
                soak.outcomes = dict(
                    db.execute("SELECT outcome, count(*) FROM calls GROUP BY outcome").fetchall()
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    judge(soak)
    return soak


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls measured after the warm-up")
    parser.add_argument("--warmup", type=int, default=200, help="calls before the baseline")
    parser.add_argument("--concurrency", type=int, default=16, help="calls at a time")
    parser.add_argument("--checkpoint", type=int, default=1000, help="calls between two RSS readings")
    parser.add_argument("--rss-noise-kib", type=int, default=4096, help="RSS growth allowed (KiB)")
    parser.add_argument(
        "--rss-slope-kib", type=float, default=100.0, help="RSS trend allowed, KiB per 1,000 calls"
    )
    parser.add_argument(
        "--recordings", action="store_true", help="record each call's audio, as serve does by default"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # SIGTERM ends the soak like Ctrl-C: the server it started is stopped, its folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.calls < 1 or args.warmup < 1 or args.concurrency < 1 or args.checkpoint < 1:
        raise SystemExit("soak: --calls, --warmup, --concurrency and --checkpoint must be at least 1")
    soak = asyncio.run(soak_run(args))
    print(report(soak))
    if args.out is not None:
        figures = {**asdict(soak), "passed": soak.passed, "machine": machine()}
        args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    raise SystemExit(0 if soak.passed else 1)


def machine() -> dict[str, object]:
    """What the soak ran on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
