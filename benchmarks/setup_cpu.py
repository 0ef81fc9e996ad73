"""A call's set-up CPU, measured directly: calls that send no media, from idle until all are set up.

The echo benchmark works set-up out as the server's CPU from idle to its window less the window's
steady echo cost: a difference of two large numbers that moves by milliseconds between runs. Here
the calls send no audio, so nothing needs subtracting but the server's own background. Each call
is what Twilio does: the Media Streams WebSocket, ``connected`` and ``start``, and every mark echoed
as it arrives (playback takes no time here). Once every call has had its first mark echoed and the
server's CPU has settled, the CPU it used since it was idle, less its background rate over that
time (read over BACKGROUND_WINDOW_S afterwards, with the calls still open), divided by the calls, is
the set-up CPU per call: the handshake, the session (flow, chart, recording), the greeting's
synthesis and audio, the flow's first transitions and their records. CPU is read to the nanosecond
from the scheduler (/proc/<pid>/task/*/schedstat), not in 10 ms clock ticks.

    python benchmarks/setup_cpu.py --calls 100 --variant voicefsm --variant floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen
import procstat
import servers
from websockets.asyncio.client import ClientConnection

#: Calls open this far apart (a burst of 100 handshakes at once measures the accept queue instead).
SPACING_S = 0.01
#: The server has settled when its CPU over this long stays under SETTLED_CORES.
SETTLE_WINDOW_S = 0.5
SETTLED_CORES = 0.05
SETTLE_TIMEOUT_S = 30.0
#: The background rate (calls open, nothing happening) is read over this long.
BACKGROUND_WINDOW_S = 2.0


async def _call(url: str, index: int, greeted: asyncio.Event) -> None:
    """One caller: start, then echo every mark until cancelled; ``greeted`` once the first is echoed."""
    ws: ClientConnection = await loadgen.open_call(url)
    stream_sid = f"MZ{index:032x}"
    try:
        await ws.send(loadgen.connected_json())
        await ws.send(loadgen.start_json(stream_sid, f"CA{index:032x}", {"caller": "+15550000000"}))
        sequence = 3
        async for text in ws:
            message = json.loads(text)
            if message.get("event") == "mark":
                await ws.send(loadgen.mark_echo_json(stream_sid, sequence, message["mark"]["name"]))
                sequence += 1
                greeted.set()
    finally:
        with contextlib.suppress(Exception):
            await ws.close()


async def _settled(pid: int) -> None:
    """Wait until the server's CPU settles (or SETTLE_TIMEOUT_S has passed)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        before = procstat.thread_cpu_seconds(pid)
        await asyncio.sleep(SETTLE_WINDOW_S)
        rate = (procstat.thread_cpu_seconds(pid) - before) / SETTLE_WINDOW_S
        if rate < SETTLED_CORES or time.monotonic() > deadline:
            return


async def _background(pid: int) -> float:
    """The server's CPU rate (cores) over BACKGROUND_WINDOW_S from now."""
    before = procstat.thread_cpu_seconds(pid)
    await asyncio.sleep(BACKGROUND_WINDOW_S)
    return (procstat.thread_cpu_seconds(pid) - before) / BACKGROUND_WINDOW_S


async def measure(variant: str, calls: int, *, core: int | None, expects_marks: bool) -> dict[str, Any]:
    """Start ``variant`` fresh, set up ``calls`` calls, return the CPU per call and how it was read."""
    with tempfile.TemporaryDirectory() as folder, servers.running(variant, Path(folder), core) as server:
        pid = server.pid
        await _settled(pid)
        idle_at, idle_cpu = time.monotonic(), procstat.thread_cpu_seconds(pid)
        greeted = [asyncio.Event() for _ in range(calls)]
        tasks = []
        for index in range(calls):
            tasks.append(asyncio.create_task(_call(server.ws_url, index, greeted[index])))
            await asyncio.sleep(SPACING_S)
        try:
            if expects_marks:  # the floor greets nobody: its calls are set up once they have started
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await asyncio.gather(*(event.wait() for event in greeted))
            await _settled(pid)
            elapsed = time.monotonic() - idle_at
            used = procstat.thread_cpu_seconds(pid) - idle_cpu
            background = await _background(pid)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_call_ms = max(0.0, used - background * elapsed) / calls * 1000
    return {
        "variant": variant,
        "calls": calls,
        "setup_cpu_ms_per_call": round(per_call_ms, 2),
        "cpu_s": round(used, 3),
        "background_cores": round(background, 4),
        "elapsed_s": round(elapsed, 2),
    }


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for variant in args.variant:
        for _ in range(args.repeat):
            result = await measure(variant, args.calls, core=args.core, expects_marks=variant != "floor")
            print(
                f"{variant:10s} {args.calls} calls: {result['setup_cpu_ms_per_call']:.2f} ms CPU per call "
                f"(CPU {result['cpu_s']} s over {result['elapsed_s']} s, background "
                f"{result['background_cores']} of a core)",
                flush=True,
            )
            results.append(result)
        if args.repeat > 1:  # one run moves by a millisecond or more on a shared machine
            runs = [result["setup_cpu_ms_per_call"] for result in results if result["variant"] == variant]
            median = statistics.median(runs)
            print(f"{variant:10s} median of {len(runs)} runs: {median:.2f} ms CPU per call", flush=True)
    return results


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--variant", action="append", choices=sorted(servers.VARIANTS), default=None)
    parser.add_argument("--repeat", type=int, default=1, help="fresh servers per variant")
    parser.add_argument("--core", type=int, default=0, help="the core the server is pinned to")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    args.variant = args.variant or ["voicefsm", "floor"]
    results = asyncio.run(_main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
