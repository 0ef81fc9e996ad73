"""voicefsm's benchmarks in one command: prints Markdown tables and writes every number as JSON.

    python benchmarks/run.py [--quick | --smoke] [--realtime] [--json out.json]
    python benchmarks/run.py --render out.json   # the tables again, from a saved run

1. micro: codec, message parse/build, the engine's per-frame path, flow ``send()``, idle call memory;
2. echo capacity: N simulated Twilio calls (50 frames/s each) against ``voicefsm serve
   flows/echo.py`` and against a minimal FastAPI echo (the floor), each pinned to core 0 with
   the load generator on core 1; N climbs a ladder until echo p99 >= 50 ms or a frame is lost;
3. turn latency: ``flows/booking.py`` with scripted providers; each answer is injected through
   ``POST /api/calls/{sid}/caller`` and timed to the first reply audio frame;
4. profile: py-spy samples the echo server under load (full mode, when py-spy is installed).

Every server and client is a subprocess that ends by itself; nothing leaves loopback.
``--smoke`` is a few-second run of every part, for the harness's own test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import profile_server
import servers
import setup_cpu
from procstat import core_busy_seconds

BENCH = Path(__file__).resolve().parent
P99_LIMIT_MS = 50.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything to run."""

    name: str
    ladder: tuple[int, ...]
    ladder_variants: tuple[str, ...]
    point_variants: tuple[str, ...]  # measured once, at ``point_calls``
    point_calls: int
    ramp_s: float
    warm_s: float
    max_warm_s: float
    measure_s: float
    grace_s: float
    bisect: bool
    booking_calls: int
    booking_playback: str
    booking_think_s: float
    micro_level: str
    profile_calls: int | None
    quiet_wait_s: float
    #: Call set-up measured directly (setup_cpu.py): this many silent calls, on this many fresh servers.
    setup_calls: int = 100
    setup_repeats: int = 5
    latency_calls: int = 12
    latency_ramp_s: float = 6.0
    latency_playback: str = "realtime"
    latency_configs: tuple[tuple[bool, bool], ...] = (
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    )


FULL = Plan(
    name="full",
    ladder=(50, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 800),
    ladder_variants=("voicefsm", "floor"),
    point_variants=("voicefsm-norec", "voicefsm-asyncio"),
    point_calls=100,
    ramp_s=2.0,
    warm_s=2.0,
    max_warm_s=10.0,
    measure_s=6.0,
    grace_s=1.0,
    bisect=True,
    booking_calls=100,
    booking_playback="realtime",
    booking_think_s=0.3,
    micro_level="full",
    profile_calls=100,
    quiet_wait_s=10.0,
)
PLANS = {
    "full": FULL,
    "quick": replace(
        FULL,
        name="quick",
        ladder=(50, 100),
        point_variants=(),
        ramp_s=1.0,
        warm_s=1.5,
        max_warm_s=4.0,
        measure_s=3.0,
        bisect=False,
        booking_calls=20,
        booking_playback="instant",
        micro_level="quick",
        profile_calls=None,
        quiet_wait_s=5.0,
        latency_calls=4,
        latency_ramp_s=2.0,
        setup_repeats=2,
    ),
    "smoke": replace(
        FULL,
        name="smoke",
        ladder=(4,),
        point_variants=(),
        ramp_s=0.1,
        warm_s=0.6,
        max_warm_s=1.0,
        measure_s=0.6,
        grace_s=0.5,
        bisect=False,
        booking_calls=2,
        booking_playback="instant",
        booking_think_s=0.05,
        micro_level="smoke",
        profile_calls=None,
        quiet_wait_s=0.0,
        latency_calls=1,
        latency_ramp_s=0.1,
        latency_playback="instant",
        latency_configs=((True, True),),
        setup_repeats=0,
    ),
}


# -- cores and quiet ------------------------------------------------------------------------------


def choose_cores() -> tuple[int | None, int | None]:
    """(server core, client core): 0 and 1 when there are two to use, otherwise no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        return available[0], available[1]
    return None, None


def background_load(cores: tuple[int, ...], seconds: float = 0.5) -> list[float]:
    """How busy each core is right now (0..1) while none of our processes runs."""
    if not cores:
        return []
    before = [core_busy_seconds(core) for core in cores]
    time.sleep(seconds)
    return [
        round((core_busy_seconds(core) - start) / seconds, 2)
        for core, start in zip(cores, before, strict=True)
    ]


def wait_for_quiet(cores: tuple[int, ...], max_wait_s: float, threshold: float = 0.15) -> list[float]:
    """Wait (at most ``max_wait_s``) until other work on the machine leaves our cores; return their load."""
    deadline = time.monotonic() + max_wait_s
    load = background_load(cores, 0.5 if max_wait_s else 0.1)
    while load and max(load) > threshold and time.monotonic() < deadline:
        time.sleep(1.0)
        load = background_load(cores)
    return load


# -- subprocesses -------------------------------------------------------------------------------


def run_loadgen(
    args: list[str], client_core: int | None, timeout_s: float, on_window_start: Any = None
) -> dict[str, Any]:
    """Run loadgen.py with ``args`` on the client core; return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = servers.pinned(
        [sys.executable, str(BENCH / "loadgen.py"), *args, "--out", str(out)], client_core
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if '"window_start"' in line and on_window_start is not None:
                on_window_start()
        process.wait(timeout_s)
        if process.returncode != 0:
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"loadgen {args[0]} failed ({process.returncode}):\n{error[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return result
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.unlink(missing_ok=True)


def echo_step(
    variant: str,
    calls: int,
    plan: Plan,
    workdir: Path,
    cores: tuple[int | None, int | None],
    *,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    """One echo measurement: a fresh server, ``calls`` calls, its CPU, memory, latency and loss."""
    server_core, client_core = cores
    quiet = wait_for_quiet(tuple(core for core in cores if core is not None), plan.quiet_wait_s)
    profiler: list[subprocess.Popen[bytes] | None] = []
    with servers.running(variant, workdir, server_core) as server:

        def window_started() -> None:
            if profile_out is not None:
                profiler.append(profile_server.start_recording(server.pid, plan.measure_s, profile_out))

        args = [
            *("echo", "--url", server.ws_url, "--calls", str(calls)),
            *("--ramp", str(plan.ramp_s), "--warm", str(plan.warm_s), "--max-warm", str(plan.max_warm_s)),
            *("--measure", str(plan.measure_s)),
            *("--grace", str(plan.grace_s), "--server-pid", str(server.pid)),
            *(("--server-core", str(server_core)) if server_core is not None else ()),
        ]
        budget = plan.ramp_s + plan.max_warm_s + plan.measure_s + plan.grace_s + 60
        result = run_loadgen(args, client_core, budget, window_started)
        for process in profiler:
            if process is not None:
                process.wait(30)
    latency = result["latency_ms"]
    result["variant"] = variant
    result["background_load_before"] = quiet
    result["pass"] = bool(
        result["calls_failed"] == 0
        and result["frames_lost"] == 0
        and latency["p99"] is not None
        and latency["p99"] < P99_LIMIT_MS
    )
    print(f"  {variant:16s} {calls:4d} calls: {step_line(result)}", file=sys.stderr, flush=True)
    return result


def capacity(variant: str, plan: Plan, workdir: Path, cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """Climb the ladder until a step fails; then (full mode) bisect between the last pass and the fail
    down to 25 calls, so that a capacity is known to a step of 25 whatever rung it fell between."""
    steps = []
    passed: int | None = None
    failed: int | None = None
    for calls in plan.ladder:
        step = echo_step(variant, calls, plan, workdir, cores)
        steps.append(step)
        if not step["pass"]:
            failed = calls
            break
        passed = calls
    while plan.bisect and passed is not None and failed is not None and failed - passed > 25:
        middle = (passed + failed) // 2 // 25 * 25
        step = echo_step(variant, middle, plan, workdir, cores)
        steps.append(step)
        if step["pass"]:
            passed = middle
        else:
            failed = middle
    return {"variant": variant, "capacity": passed, "first_failure": failed, "steps": steps}


def booking(plan: Plan, workdir: Path, cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """Turn latency through flows/booking.py with scripted STT and TTS."""
    server_core, client_core = cores
    quiet = wait_for_quiet(tuple(core for core in cores if core is not None), plan.quiet_wait_s)
    with servers.running("booking", workdir, server_core) as server:
        args = [
            *(
                "booking",
                "--url",
                server.ws_url,
                "--http",
                server.http_url,
                "--calls",
                str(plan.booking_calls),
            ),
            *("--ramp", str(plan.ramp_s), "--playback", plan.booking_playback, "--timeout", "90"),
            *("--think", str(plan.booking_think_s)),
            *("--server-pid", str(server.pid)),
            *(("--server-core", str(server_core)) if server_core is not None else ()),
        ]
        result = run_loadgen(args, client_core, 200)
    result["background_load_before"] = quiet
    turn = result["turn_latency_ms"]
    print(
        f"  booking {plan.booking_calls} calls: turn p50 {turn['p50']} ms, p99 {turn['p99']} ms, "
        f"{result['calls_completed']} completed",
        file=sys.stderr,
        flush=True,
    )
    return result


def speak_ahead_available() -> bool:
    """Whether this voicefsm has the speaking-ahead switch (Settings.speak_ahead, VOICEFSM_SPEAK_AHEAD)."""
    if str(servers.ROOT) not in sys.path:
        sys.path.insert(0, str(servers.ROOT))  # the checkout the servers run (servers.py sets PYTHONPATH so)
    from voicefsm.settings import Settings

    return "speak_ahead" in Settings.model_fields


def latency_config(
    cache: bool,
    ahead: bool,
    plan: Plan,
    workdir: Path,
    cores: tuple[int | None, int | None],
    first_byte_ms: float,
) -> dict[str, Any]:
    """Response latency of booking calls with the real ElevenLabs provider against the stand-in.

    Fresh stand-in and server per configuration (so nothing is cached from the one before); the
    stand-in runs on the client core. Silence = the answer leaving the caller -> the first reply
    audio frame arriving; ring = the voice webhook's POST -> the first greeting frame.
    """
    server_core, client_core = cores
    with servers.running(
        "tts-standin", workdir, client_core, extra_args=("--first-byte-ms", str(first_byte_ms))
    ) as standin:
        env = {
            "ELEVENLABS_API_KEY": "benchmark-stand-in",
            "ELEVENLABS_BASE_URL": standin.http_url,
            "VOICEFSM_PROMPT_CACHE": "1" if cache else "0",
            "VOICEFSM_SPEAK_AHEAD": "1" if ahead else "0",
            "VOICEFSM_PROMPT_CACHE_DIR": str(workdir / f"prompt-cache-{time.monotonic_ns()}"),
        }
        quiet = wait_for_quiet(tuple(core for core in cores if core is not None), plan.quiet_wait_s)
        started = time.monotonic()
        with servers.running("booking-tts", workdir, server_core, extra_env=env) as server:
            ready_s = time.monotonic() - started
            with urllib.request.urlopen(f"{standin.http_url}/stats", timeout=5) as response:
                warmed = json.loads(response.read())["total"]
            args = [
                *("booking", "--url", server.ws_url, "--http", server.http_url, "--webhook"),
                *("--calls", str(plan.latency_calls), "--ramp", str(plan.latency_ramp_s)),
                *(
                    "--playback",
                    plan.latency_playback,
                    "--timeout",
                    "90",
                    "--think",
                    str(plan.booking_think_s),
                ),
                *("--server-pid", str(server.pid)),
            ]
            result = run_loadgen(args, client_core, 200)
            with urllib.request.urlopen(f"{standin.http_url}/stats", timeout=5) as response:
                stats = json.loads(response.read())
    greeting = servers.BOOKING_GREETING
    result.update(
        {
            "prompt_cache": cache,
            "speak_ahead": ahead if speak_ahead_available() else None,
            "first_byte_ms": first_byte_ms,
            "server_ready_s": round(ready_s, 2),
            "tts_requests_before_calls": warmed,
            "tts_requests_total": stats["total"],
            "tts_requests_greeting": stats["requests"].get(greeting, 0),
            "background_load_before": quiet,
        }
    )
    silence, ring = result["turn_latency_ms"], result["ring_to_greeting_ms"]
    print(
        f"  latency cache {'on' if cache else 'off'}, ahead {'on' if ahead else 'off'}: silence p50 "
        f"{silence['p50']} p95 {silence.get('p95')} ms, ring->greeting p50 {ring['p50']} ms, "
        f"{result['calls_completed']}/{result['calls']} completed",
        file=sys.stderr,
        flush=True,
    )
    return result


def response_latency(
    plan: Plan, workdir: Path, cores: tuple[int | None, int | None], first_byte_ms: float
) -> dict[str, Any]:
    """Every cache x speaking-ahead configuration of the plan (ahead only where voicefsm has the switch)."""
    available = speak_ahead_available()
    configs = [(cache, ahead) for cache, ahead in plan.latency_configs if available or ahead]
    runs = [latency_config(cache, ahead, plan, workdir, cores, first_byte_ms) for cache, ahead in configs]
    return {"first_byte_ms": first_byte_ms, "speak_ahead_available": available, "runs": runs}


def micro(plan: Plan, server_core: int | None) -> dict[str, Any]:
    """The micro-benchmarks, in a subprocess on the server's core."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        command = [sys.executable, str(BENCH / "micro.py"), "--level", plan.micro_level, "--json", str(out)]
        subprocess.run(servers.pinned(command, server_core), check=True, timeout=300, cwd=servers.ROOT)
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return result
    finally:
        out.unlink(missing_ok=True)


def profile(plan: Plan, workdir: Path, cores: tuple[int | None, int | None], out_dir: Path) -> dict[str, Any]:
    """Sample the voicefsm echo server under ``plan.profile_calls`` calls with py-spy."""
    if plan.profile_calls is None:
        return {"skipped": "not in this mode"}
    if profile_server.find_py_spy() is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    raw = out_dir / "profile_echo.raw.txt"
    step = echo_step("voicefsm", plan.profile_calls, plan, workdir, cores, profile_out=raw)
    if not raw.exists():
        return {"skipped": "py-spy wrote no profile (ptrace not permitted?)", "step": step}
    analysis = profile_server.analyze(raw)
    frames = step["calls"] * 50 * step["window_s"]
    us_per_frame = step["server_cpu_s"] / frames * 1e6 if step.get("server_cpu_s") else None
    report = out_dir / "profile_echo.txt"
    header = (
        f"voicefsm echo, {step['calls']} calls, {step['window_s']} s window, server CPU "
        f"{step.get('server_cpu_util')} of a core = {us_per_frame:.1f} us per echoed frame (in + out)\n"
        if us_per_frame
        else ""
    )
    report.write_text(header + profile_server.render(analysis, us_per_frame), encoding="utf-8")
    return {"step": step, "us_per_frame": us_per_frame, "analysis": analysis, "report": str(report)}


# -- output ---------------------------------------------------------------------------------------


def step_line(step: dict[str, Any]) -> str:
    latency = step["latency_ms"]
    return (
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms, "
        f"lost {step['frames_lost']}, "
        f"server CPU {step.get('server_cpu_util')} (+{step.get('server_core_other_util')} other), "
        f"client CPU {step.get('client_cpu_util')}, warm {step.get('warm_s')} s, "
        f"{'PASS' if step['pass'] else 'FAIL'}"
    )


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=servers.ROOT, check=False
    ).stdout.strip()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit or None,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def setup_cost(plan: Plan, cores: tuple[int | None, int | None]) -> dict[str, Any]:
    """Call set-up CPU measured directly (benchmarks/setup_cpu.py), voicefsm and the floor, fresh servers.

    One run moves by a millisecond on a shared machine, so each server is measured several times
    and the median is what the target is judged by.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for variant in ("voicefsm", "floor"):
        runs[variant] = [
            asyncio.run(
                setup_cpu.measure(variant, plan.setup_calls, core=cores[0], expects_marks=variant != "floor")
            )
            for _ in range(plan.setup_repeats)
        ]
    medians = {
        variant: statistics.median(run["setup_cpu_ms_per_call"] for run in measured)
        for variant, measured in runs.items()
    }
    return {"calls": plan.setup_calls, "runs": runs, "median_ms": medians}


def setup_table(setup: dict[str, Any]) -> list[str]:
    out = [
        f"### Call set-up CPU, measured directly ({setup['calls']} silent calls, benchmarks/setup_cpu.py)\n",
        "| server | runs (ms CPU per call, each a fresh server) | median |",
        "|---|---|---:|",
    ]
    for variant, measured in setup["runs"].items():
        each = ", ".join(_fmt(run["setup_cpu_ms_per_call"], 2) for run in measured)
        out.append(f"| {variant} | {each} | {_fmt(setup['median_ms'][variant], 2)} |")
    out.append("")
    return out


def _met(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "NOT met"


def targets(results: dict[str, Any]) -> list[str]:
    """The issues' targets, each with the number that decides it."""
    steps = {run["variant"]: {step["calls"]: step for step in run["steps"]} for run in results["capacity"]}
    at_100 = steps.get("voicefsm", {}).get(100)
    ratio = results.get("capacity_ratio")
    book = results.get("booking") or {}
    turn_p99 = (book.get("turn_latency_ms") or {}).get("p99")
    kib = at_100.get("rss_per_call_kib") if at_100 else None
    setup = at_100.get("setup_cpu_ms_per_call") if at_100 else None
    setup_how = "echo, 100 calls, records and recording on"
    direct = results.get("setup")
    if direct:  # the direct measurement, not the echo run's CPU less its steady cost (see setup_cpu.py)
        setup = direct["median_ms"]["voicefsm"]
        setup_how = (
            f"median of {len(direct['runs']['voicefsm'])} fresh servers, {direct['calls']} silent echo "
            f"calls, records and recording on; the floor {_fmt(direct['median_ms']['floor'], 2)} ms"
        )
    send_us = ((results.get("micro") or {}).get("flow_send") or {}).get("send_us")
    cached = [
        run
        for run in (results.get("latency") or {}).get("runs", [])
        if run["prompt_cache"] and run.get("speak_ahead") in (True, None)
    ]
    ring = cached[0]["ring_to_greeting_ms"] if cached else {}
    asked = cached[0]["tts_requests_greeting"] if cached else None
    first_byte = cached[0]["first_byte_ms"] if cached else None
    rows = [
        (
            "100 echo calls: p99 < 50 ms, no frame lost",
            f"p99 {_fmt(at_100['latency_ms']['p99'], 2)} ms, lost {at_100['frames_lost']}" if at_100 else "-",
            _met(at_100["pass"]) if at_100 else "-",
        ),
        (
            "echo capacity on one core >= 0.8 x the FastAPI floor's, recording on (#17)",
            f"ratio {_fmt(ratio, 2)}",
            _met(ratio >= 0.8 if ratio is not None else None),
        ),
        (
            f"engine turn p99 <= 10 ms at {book.get('calls', '-')} calls, cached prompt (#17)",
            f"p99 {_fmt(turn_p99, 2)} ms (answer POST sent -> first reply frame)",
            _met(turn_p99 <= 10.0 if turn_p99 is not None else None),
        ),
        (
            "call set-up CPU <= 3 ms (#17)",
            f"{_fmt(setup, 2 if direct else 1)} ms per call ({setup_how})",
            _met(setup <= 3.0 if setup is not None else None),
        ),
        (
            "flow send() well below 200-480 us (#17)",
            f"{_fmt(send_us, 1)} us on the booking chart",
            "-",
        ),
        (
            "greeting within 250 ms of ringing, TTS first byte 0.4 s, asked once (#17)",
            f"p99 {_fmt(ring.get('p99'), 1)} ms, max {_fmt(ring.get('max'), 1)} ms (first byte "
            f"{_fmt(first_byte, 0)} ms); greeting synthesized {_fmt(asked)} time(s)"
            if ring
            else "-",
            _met(ring["max"] <= 250 and (asked or 0) <= 1 if ring and ring.get("max") is not None else None),
        ),
        (
            "<= 256 KiB per active call",
            f"{_fmt(kib)} KiB (echo, 100 calls); booking {_fmt(book.get('rss_per_call_kib'))} KiB",
            _met(kib <= 256 if kib is not None else None),
        ),
    ]
    out = ["### Targets (issues #8 and #17)\n", "| target | measured | |", "|---|---|---|"]
    out += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in rows]
    out.append("")
    return out


def latency_table(latency: dict[str, Any]) -> list[str]:
    """Response latency per cache x speaking-ahead configuration."""
    out = [
        "### Response latency, flows/booking.py, ElevenLabs stand-in with "
        f"{_fmt(latency['first_byte_ms'], 0)} ms to first byte\n",
        "Silence: the caller's answer leaving the caller -> the first reply audio frame arriving. "
        "Ring: the voice webhook's POST -> the first greeting frame. TTS requests: how often the "
        "stand-in was asked to synthesize (the greeting alone / all, warm-up included).\n",
        "| prompt cache | speaking ahead | calls | turns | silence p50 ms | p95 ms | p99 ms | max ms "
        "| ring -> greeting p50 ms | p95 ms | max ms | TTS requests: greeting / all | server ready s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in latency["runs"]:
        silence, ring = run["turn_latency_ms"], run["ring_to_greeting_ms"]
        ahead = run.get("speak_ahead")
        cells = [
            "on" if run["prompt_cache"] else "off",
            "n/a (no switch in this build)" if ahead is None else "on" if ahead else "off",
            f"{run['calls_completed']}/{run['calls']}",
            run["turns"],
            _fmt(silence["p50"], 1),
            _fmt(silence.get("p95"), 1),
            _fmt(silence["p99"], 1),
            _fmt(silence["max"], 1),
            _fmt(ring["p50"], 1),
            _fmt(ring.get("p95"), 1),
            _fmt(ring["max"], 1),
            f"{run['tts_requests_greeting']} / {run['tts_requests_total']}",
            _fmt(run["server_ready_s"], 1),
        ]
        out.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    labels = list(latency["runs"][0]["turn_latency_by_state_ms"]) if latency["runs"] else []
    out.append("\nSilence p50 / max ms by the question answered (the reply that follows it):\n")
    out.append("| prompt cache | speaking ahead | " + " | ".join(labels) + " |")
    out.append("|---|---|" + "---:|" * len(labels))
    for run in latency["runs"]:
        ahead = run.get("speak_ahead")
        by_state = run["turn_latency_by_state_ms"]
        cells = [
            "on" if run["prompt_cache"] else "off",
            "n/a" if ahead is None else "on" if ahead else "off",
            *(f"{_fmt(by_state[label]['p50'], 1)} / {_fmt(by_state[label]['max'], 1)}" for label in labels),
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def markdown(results: dict[str, Any]) -> str:
    """The tables RESULTS.md quotes."""
    out: list[str] = []
    info = results["machine"]
    out.append(
        f"Machine: {info['cpu_model']}, {info['cpus']} cores; Python {info['python']}; "
        f"commit {info['commit']}"
    )
    scheduling = results.get("scheduling", "default")
    out.append(f"Date: {info['date_utc']}; command: `{results['command']}`; scheduling: {scheduling}\n")

    out.append("### Echo (server on one core, load generator on the other)\n")
    out.append(
        "| server | calls | p50 ms | p99 ms | max ms | lost | server CPU | CPU ms per call-s | set-up CPU ms "
        "per call | RSS MiB | RSS KiB/call | client CPU | client send lag p99 ms | other load, server core "
        "| pass |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    steps = [step for run in results["capacity"] for step in run["steps"]] + results["points"]
    if results.get("profile", {}).get("step"):
        steps.append({**results["profile"]["step"], "variant": "voicefsm (py-spy on)"})
    for step in steps:
        latency = step["latency_ms"]
        per_call = step.get("cpu_s_per_call_s")
        cells = [
            step["variant"],
            step["calls"],
            _fmt(latency["p50"], 2),
            _fmt(latency["p99"], 2),
            _fmt(latency["max"], 1),
            step["frames_lost"],
            _fmt(step.get("server_cpu_util"), 2),
            _fmt(per_call * 1000 if per_call else None, 2),
            _fmt(step.get("setup_cpu_ms_per_call"), 1),
            _fmt(step.get("rss_loaded_mib")),
            _fmt(step.get("rss_per_call_kib")),
            _fmt(step.get("client_cpu_util"), 2),
            _fmt(step["client_send_lag_ms"]["p99"], 2),
            _fmt(step.get("server_core_other_util"), 2),
            "yes" if step["pass"] else "NO",
        ]
        out.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    out.append("")
    out.append("### Capacity on one core (echo p99 < 50 ms, no frame lost)\n")
    out.append("| server | holds | first failure | |")
    out.append("|---|---:|---:|---|")
    for run in results["capacity"]:
        out.append(
            f"| {run['variant']} | {_fmt(run['capacity'])} | {_fmt(run['first_failure'])} | "
            f"{servers.DESCRIPTIONS[run['variant']]} |"
        )
    ratio = results.get("capacity_ratio")
    out.append(f"\nvoicefsm / floor capacity ratio: {_fmt(ratio, 2)}")
    cost = results.get("cpu_ratio")
    if cost:
        out.append(
            f"voicefsm / floor CPU per call-second at {cost['calls']} calls: {_fmt(cost['ratio'], 2)}\n"
        )

    book = results.get("booking")
    if book:
        out.append(f"### Turn latency, flows/booking.py, {book['calls']} calls, scripted STT/TTS\n")
        out.append("| measure | count | p50 ms | p99 ms | max ms |")
        out.append("|---|---:|---:|---:|---:|")
        rows = [("answer POST sent -> first reply frame", book["turn_latency_ms"])]
        rows += [(f"  after {label}", stats) for label, stats in book["turn_latency_by_state_ms"].items()]
        rows.append(("answer POST round trip (202)", book["inject_ack_ms"]))
        for label, stats in rows:
            out.append(
                f"| {label} | {stats['count']} | {_fmt(stats['p50'], 2)} | {_fmt(stats['p99'], 2)} | "
                f"{_fmt(stats['max'], 2)} |"
            )
        out.append(
            f"\n{book['calls_completed']}/{book['calls']} calls completed, {book['turns']} turns, "
            f"{book['turns_unanswered']} unanswered; "
            f"server CPU {_fmt(book.get('server_cpu_util'), 2)} of a core "
            f"over {book['elapsed_s']} s, RSS {_fmt(book.get('rss_loaded_mib'))} MiB "
            f"({_fmt(book.get('rss_per_call_kib'))} KiB per call)\n"
        )

    micro_results = results.get("micro")
    if micro_results:
        codec, messages = micro_results["codec"], micro_results["messages"]
        loop = micro_results["media_loop_echo"]
        engine, flow, memory = (
            micro_results["engine_path"],
            micro_results["flow_send"],
            micro_results["idle_call_memory"],
        )
        out.append("### Micro (one process, server core)\n")
        out.append("| what | value |")
        out.append("|---|---:|")
        rows = [
            ("mu-law encode, one 20 ms frame", f"{codec['encode_us_per_frame']} us"),
            ("mu-law decode, one 20 ms frame", f"{codec['decode_us_per_frame']} us"),
            ("mu-law encode, bulk (1 s per call)", f"{codec['encode_msamples_per_s_bulk']} Msamples/s"),
            ("mu-law decode, bulk (1 s per call)", f"{codec['decode_msamples_per_s_bulk']} Msamples/s"),
            ("parse_message, inbound media frame", f"{messages['parse_media_us']} us"),
            ("media_message, outbound 160 B frame", f"{messages['build_media_us']} us"),
            ("floor: json.loads + b64decode", f"{messages['floor_json_parse_media_us']} us"),
            ("floor: b64encode + json.dumps", f"{messages['floor_json_build_media_us']} us"),
            ("engine echo path per frame, no sockets", f"{engine['echo_frame_us']} us"),
            (
                f"engine media loop per echoed frame, {loop['calls']} calls, no sockets (run_call)",
                f"{loop['cpu_us_per_frame']} us",
            ),
            (
                f"recorder mix per frame (caller + agent, batched {engine['recorder_mix_batch_bytes']} B)",
                f"{engine['recorder_mix_us_per_frame']} us",
            ),
            ("recorder mix per frame, unbatched", f"{engine['recorder_mix_unbatched_us_per_frame']} us"),
            ("flow send() on the booking chart", f"{flow['send_us']} us"),
            ("idle Call", f"{memory['call_kib']} KiB"),
            ("idle Call + FlowRuntime(Booking)", f"{memory['call_plus_flow_runtime_kib']} KiB"),
        ]
        records = micro_results.get("record_writes")
        if records:
            rows += [
                ("call set-up records (5 rows, SQLite), CPU per call", f"{records['cpu_ms_per_call']} ms"),
                (
                    "call set-up records, wall time per call (serial writer)",
                    f"{records['wall_ms_per_call']} ms",
                ),
            ]
        out += [f"| {label} | {value} |" for label, value in rows]
        out.append("")

    if results.get("latency"):
        out += latency_table(results["latency"])

    if results.get("setup"):
        out += setup_table(results["setup"])

    out += targets(results)

    prof = results.get("profile") or {}
    if prof.get("analysis"):
        out.append(f"### Profile: see {Path(prof['report']).name}\n")
        out.append("| echo step (inclusive) | share | us per frame |")
        out.append("|---|---:|---:|")
        for step, pct in prof["analysis"]["echo_steps_pct"]:
            us = pct * prof["us_per_frame"] / 100 if prof.get("us_per_frame") else None
            out.append(f"| {step} | {pct}% | {_fmt(us)} |")
        out.append("")
    elif prof.get("skipped"):
        out.append(f"Profile: skipped ({prof['skipped']})\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks of the chosen size; print Markdown, write JSON."""
    parser = argparse.ArgumentParser(description="voicefsm benchmarks")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="under a minute: N = 50 and 100, no profile")
    size.add_argument("--smoke", action="store_true", help="a few seconds: the harness's own test")
    parser.add_argument("--json", dest="json_path", default=None, help="write all results here")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--variants", default=None, help="servers whose capacity to search (comma-separated)")
    parser.add_argument("--out-dir", default=None, help="where the profile is written (default: benchmarks/)")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run every server and load generator at real-time priority (SCHED_FIFO 1; needs root): on a "
        "shared machine, other work then only gets the CPU they leave, and cannot add latency",
    )
    parser.add_argument("--render", default=None, help="print the tables of a saved JSON result; run nothing")
    parser.add_argument(
        "--first-byte-ms",
        type=float,
        default=400.0,
        help="the TTS stand-in's time to first byte (latency run)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="run only these parts (comma-separated: micro, echo, setup, booking, latency, profile)",
    )
    args = parser.parse_args(argv)
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text(encoding="utf-8"))))
        return 0
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # inherited by every subprocess
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.no_profile:
        plan = replace(plan, profile_calls=None)
    if args.variants:
        plan = replace(plan, ladder_variants=tuple(args.variants.split(",")), point_variants=())
    out_dir = Path(args.out_dir) if args.out_dir else BENCH
    # SIGTERM unwinds like Ctrl-C, so every server and load generator started so far is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = choose_cores()
    if cores[1] is not None:
        os.sched_setaffinity(0, {cores[1]})  # this process and py-spy stay off the server's core

    started = time.monotonic()
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "plan": plan.name,
        "machine": machine(),
        "cores": {"server": cores[0], "client": cores[1]},
        "scheduling": "SCHED_FIFO 1 (--realtime)" if args.realtime else "default (SCHED_OTHER)",
    }
    parts = (
        set(args.only.split(","))
        if args.only
        else {"micro", "echo", "setup", "booking", "latency", "profile"}
    )
    results["capacity"], results["points"] = [], []
    with tempfile.TemporaryDirectory(prefix="voicefsm-bench-") as temp:
        workdir = Path(temp)
        if "micro" in parts:
            print("micro ...", file=sys.stderr, flush=True)
            results["micro"] = micro(plan, cores[0])
        if "echo" in parts:
            print("echo capacity ...", file=sys.stderr, flush=True)
            results["capacity"] = [
                capacity(variant, plan, workdir, cores) for variant in plan.ladder_variants
            ]
            results["points"] = [
                echo_step(variant, plan.point_calls, plan, workdir, cores) for variant in plan.point_variants
            ]
        if "setup" in parts and plan.setup_repeats:
            print("call set-up CPU ...", file=sys.stderr, flush=True)
            results["setup"] = setup_cost(plan, cores)
        if "booking" in parts:
            print("booking turn latency ...", file=sys.stderr, flush=True)
            results["booking"] = booking(plan, workdir, cores)
        if "latency" in parts:
            print("response latency (TTS stand-in) ...", file=sys.stderr, flush=True)
            results["latency"] = response_latency(plan, workdir, cores, args.first_byte_ms)
        if "profile" in parts:
            print("profile ...", file=sys.stderr, flush=True)
            results["profile"] = profile(plan, workdir, cores, out_dir)
    held = {run["variant"]: run["capacity"] for run in results["capacity"]}
    if held.get("voicefsm") and held.get("floor"):
        results["capacity_ratio"] = held["voicefsm"] / held["floor"]
    by_variant = {
        run["variant"]: {step["calls"]: step for step in run["steps"]} for run in results["capacity"]
    }
    for calls in (100, 50, 4):
        ours, floor = by_variant.get("voicefsm", {}).get(calls), by_variant.get("floor", {}).get(calls)
        if ours and floor and ours.get("cpu_s_per_call_s") and floor.get("cpu_s_per_call_s"):
            ratio = ours["cpu_s_per_call_s"] / floor["cpu_s_per_call_s"]
            results["cpu_ratio"] = {"calls": calls, "ratio": ratio}
            break
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    text = markdown(results)
    print(text)
    print(f"(took {results['elapsed_s']} s)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
