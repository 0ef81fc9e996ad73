"""Micro-benchmarks of the per-frame and per-event work, in one process, no sockets.

- mu-law encode/decode: one 20 ms frame per call, and bulk throughput (1 s of audio per call);
- Media Streams messages: parse an inbound media frame, build an outbound one (and the floor's
  ``json`` + ``base64`` way of doing the same, for comparison);
- the engine's per-frame path without sockets: parse -> ``Call.put_inbound`` -> the echo's read
  -> ``Call.put_outbound`` -> ``next_outbound`` -> build; and the recorder's per-frame mixing;
- the flow: one ``send()`` on the booking chart;
- memory per idle call: tracemalloc around creating N ``Call`` objects (+ a ``FlowRuntime``);
- the call records a call's set-up writes (SQLite through ``RecordWriter``), CPU and wall time.

Each timing is the best of several repeats of a loop calibrated to run about ``min_time_s``.
Run: ``python benchmarks/micro.py [--level smoke|quick|full] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

STREAM_SID = "MZ" + "1" * 32


def best_per_op(fn: Callable[[], object], *, min_time_s: float, repeats: int) -> float:
    """Seconds per call of ``fn``: the best of ``repeats`` loops that each take about ``min_time_s``."""
    loops = 1
    while True:
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_time_s / 4 or loops >= 1 << 24:
            break
        loops *= 4
    loops = max(1, int(loops * (min_time_s / max(elapsed, 1e-9))))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - started) / loops)
    return best


async def best_per_op_async(fn: Callable[[], Awaitable[object]], *, count: int, repeats: int) -> float:
    """Seconds per awaited call of ``fn`` (best of ``repeats`` runs of ``count`` calls)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            await fn()
        best = min(best, (time.perf_counter() - started) / count)
    return best


def codec(min_time_s: float, repeats: int) -> dict[str, Any]:
    """mu-law encode and decode: per 20 ms frame and bulk (1 s of audio per call)."""
    import numpy as np

    from voicefsm.core.audio import ulaw_decode, ulaw_encode

    rng = np.random.default_rng(7)
    pcm_second = (rng.normal(0, 3000, 8000).clip(-32768, 32767).astype("<i2")).tobytes()
    ulaw_second = ulaw_encode(pcm_second)
    pcm_frame, ulaw_frame = pcm_second[:320], ulaw_second[:160]
    encode_frame = best_per_op(lambda: ulaw_encode(pcm_frame), min_time_s=min_time_s, repeats=repeats)
    decode_frame = best_per_op(lambda: ulaw_decode(ulaw_frame), min_time_s=min_time_s, repeats=repeats)
    encode_bulk = best_per_op(lambda: ulaw_encode(pcm_second), min_time_s=min_time_s, repeats=repeats)
    decode_bulk = best_per_op(lambda: ulaw_decode(ulaw_second), min_time_s=min_time_s, repeats=repeats)
    return {
        "encode_us_per_frame": round(encode_frame * 1e6, 3),
        "decode_us_per_frame": round(decode_frame * 1e6, 3),
        "encode_msamples_per_s_bulk": round(8000 / encode_bulk / 1e6, 1),
        "decode_msamples_per_s_bulk": round(8000 / decode_bulk / 1e6, 1),
        "encode_x_realtime_bulk": round(1.0 / encode_bulk),
        "decode_x_realtime_bulk": round(1.0 / decode_bulk),
    }


def messages(min_time_s: float, repeats: int) -> dict[str, Any]:
    """Parse an inbound media frame and build an outbound one; the floor's json/base64 way beside it."""
    from voicefsm.telephony.twilio.media import inbound_media_message, media_message, parse_message

    payload = bytes((0x55 + 7 * i) % 256 for i in range(160))
    inbound = inbound_media_message(STREAM_SID, payload, chunk=1234, timestamp_ms=24680, sequence_number=1235)
    parse = best_per_op(lambda: parse_message(inbound), min_time_s=min_time_s, repeats=repeats)
    build = best_per_op(lambda: media_message(STREAM_SID, payload), min_time_s=min_time_s, repeats=repeats)

    def floor_parse() -> bytes:
        return base64.b64decode(json.loads(inbound)["media"]["payload"])

    def floor_build() -> str:
        media = {"payload": base64.b64encode(payload).decode("ascii")}
        return json.dumps({"event": "media", "streamSid": STREAM_SID, "media": media})

    floor_parse_s = best_per_op(floor_parse, min_time_s=min_time_s, repeats=repeats)
    floor_build_s = best_per_op(floor_build, min_time_s=min_time_s, repeats=repeats)
    return {
        "parse_media_us": round(parse * 1e6, 3),
        "build_media_us": round(build * 1e6, 3),
        "floor_json_parse_media_us": round(floor_parse_s * 1e6, 3),
        "floor_json_build_media_us": round(floor_build_s * 1e6, 3),
        "inbound_frame_chars": len(inbound),
    }


async def engine_path(min_time_s: float, repeats: int) -> dict[str, Any]:
    """The server's per-frame work on one echo call, minus uvicorn and the WebSocket."""
    from voicefsm.core.wav import CallMixdown
    from voicefsm.runtime.call import Call
    from voicefsm.telephony.twilio.media import inbound_media_message, media_message, parse_message

    payload = bytes((0x55 + 7 * i) % 256 for i in range(160))
    inbound = inbound_media_message(STREAM_SID, payload, chunk=1, timestamp_ms=20, sequence_number=2)
    call = Call(call_sid="CA" + "1" * 32)

    async def one_frame() -> str:
        message = parse_message(inbound)
        call.put_inbound(message.payload)  # type: ignore[union-attr]
        frame = call.inbound.get_nowait()
        assert frame is not None
        call.put_outbound(frame)
        item = await call.next_outbound()
        return media_message(STREAM_SID, item.ulaw)  # type: ignore[union-attr]

    count = max(1000, int(min_time_s / 20e-6))
    per_frame = await best_per_op_async(one_frame, count=count, repeats=repeats)

    class Sink:
        def writeframes(self, data: bytes) -> None:
            pass

    def mix_cost(batch_bytes: int) -> float:
        mixdown = CallMixdown(Sink(), batch_bytes=batch_bytes)

        def mix_one() -> None:
            mixdown.add_agent(payload)
            mixdown.add_caller(payload)

        return best_per_op(mix_one, min_time_s=min_time_s, repeats=repeats)

    from voicefsm.runtime.recorder import MIX_BATCH_BYTES  # how a live call's recorder batches its mix

    return {
        "echo_frame_us": round(per_frame * 1e6, 3),
        "recorder_mix_us_per_frame": round(mix_cost(MIX_BATCH_BYTES) * 1e6, 3),
        "recorder_mix_batch_bytes": MIX_BATCH_BYTES,
        "recorder_mix_unbatched_us_per_frame": round(mix_cost(0) * 1e6, 3),
    }


class _LoopbackTransport:
    """A far end without a socket: ``receive`` yields to the loop once per frame, as a socket read
    does, and parses and translates the frame; ``send`` builds the outbound text, as the real one does."""

    echoes_marks = True

    def __init__(self, inbound: str, frames: int) -> None:
        self.inbound = inbound
        self.left = frames
        self.sent = 0

    async def receive(self) -> object:
        from voicefsm.telephony.twilio.media import neutral_event, parse_message

        await asyncio.sleep(0)
        if self.left == 0:
            return None
        self.left -= 1
        return neutral_event(parse_message(self.inbound))  # type: ignore[arg-type]

    async def send(self, item: Any) -> None:
        from voicefsm.telephony.twilio.media import media_message

        media_message(STREAM_SID, item.ulaw)
        self.sent += 1

    async def close(self, reason: str) -> None:
        return None


async def media_loop_echo(calls: int, frames: int, repeats: int) -> dict[str, Any]:
    """The engine's whole per-frame loop on the echo line, for ``calls`` calls at once, no sockets.

    ``run_call`` with its real receive and send pumps over a loopback transport; each call echoes
    as ``flows/echo.py`` does (``Call.inbound_sink``). CPU per echoed frame, best of ``repeats``.
    """
    import contextlib

    from voicefsm.core.events import CallStarted
    from voicefsm.runtime.call import Call
    from voicefsm.runtime.driver import CallLimits, run_call
    from voicefsm.runtime.session import CallSession
    from voicefsm.telephony.twilio.media import inbound_media_message

    @contextlib.asynccontextmanager
    async def echo_session(started: CallStarted) -> AsyncIterator[CallSession]:
        call = Call(call_sid=started.call_id)
        call.inbound_sink = call.put_outbound
        yield CallSession(call)

    payload = bytes((0x55 + 7 * i) % 256 for i in range(160))
    inbound = inbound_media_message(STREAM_SID, payload, chunk=1, timestamp_ms=20, sequence_number=2)
    limits = CallLimits(idle_timeout_s=None, handler_grace_s=0.1, close_timeout_s=0.1)
    best = float("inf")
    for _ in range(repeats):
        runs = []
        for index in range(calls):
            started = CallStarted(f"CA{index:032x}")
            runs.append((_LoopbackTransport(inbound, frames), started))
        cpu = time.process_time()
        await asyncio.gather(*(run_call(t, echo_session, limits, started=started) for t, started in runs))  # type: ignore[arg-type]
        cpu = time.process_time() - cpu
        sent = sum(t.sent for t, _ in runs)
        assert sent == calls * frames, f"echoed {sent} of {calls * frames} frames"
        best = min(best, cpu / sent)
    return {"calls": calls, "frames_per_call": frames, "cpu_us_per_frame": round(best * 1e6, 3)}


async def flow_send(count: int, repeats: int) -> dict[str, Any]:
    """One ``send()`` on the booking chart: ``filled`` around ask_day -> ask_time -> ask_name -> confirm."""
    import datetime as dt

    from voicefsm.flow.loader import load_flow

    booking = load_flow(str(ROOT / "flows" / "booking.py"))
    flow = booking()
    started = flow.activate_initial_state()
    if started is not None and hasattr(started, "__await__"):
        await started
    await flow.send("spoken")  # greet -> ask_day
    values = [dt.date(2030, 1, 7), dt.time(14, 30), "Ada", False]  # confirm + no -> ask_day again

    index = 0

    async def send_one() -> None:
        nonlocal index
        await flow.send("filled", value=values[index % 4])
        index += 1

    per_send = await best_per_op_async(send_one, count=count, repeats=repeats)
    if len(flow.steps) > 100_000:
        flow.steps.clear()
    return {"send_us": round(per_send * 1e6, 2), "state_after": flow.current.id}


async def idle_call_memory(calls: int) -> dict[str, Any]:
    """Bytes allocated per idle call: ``Call`` alone, and ``Call`` + ``FlowRuntime`` on the booking flow."""
    from voicefsm.flow.loader import load_flow
    from voicefsm.providers.scripted import ScriptedTextToSpeech
    from voicefsm.runtime.call import Call
    from voicefsm.runtime.session import FlowRun

    booking = load_flow(str(ROOT / "flows" / "booking.py"))
    # Warm up once so lazily built class-level caches are not charged to the first call.
    FlowRun(Call(call_sid="CAwarm"), booking, ScriptedTextToSpeech())

    def measure(make: Callable[[int], object]) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [make(index) for index in range(calls)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
        return (after - before) / calls

    call_only = measure(lambda index: Call(call_sid=f"CA{index:032x}"))

    def call_and_runtime(index: int) -> object:
        call = Call(call_sid=f"CA{index:032x}")
        return call, FlowRun(call, booking, ScriptedTextToSpeech())

    with_runtime = measure(call_and_runtime)
    return {
        "calls": calls,
        "call_kib": round(call_only / 1024, 2),
        "call_plus_flow_runtime_kib": round(with_runtime / 1024, 2),
    }


#: Loop time per measurement, repeats, flow sends per repeat, calls for the memory figure.
LEVELS: dict[str, tuple[float, int, int, int]] = {
    "smoke": (0.005, 1, 50, 20),
    "quick": (0.05, 3, 500, 100),
    "full": (0.2, 5, 4000, 500),
}


async def record_writes(calls: int) -> dict[str, Any]:
    """What the records of one echo call's set-up cost: call_started, set_recording, 2 transitions, 1 turn.

    Written through ``RecordWriter`` to a fresh SQLite file (WAL, synchronous=FULL, as served), all
    queued at once as when calls arrive together; CPU is this process's (the aiosqlite thread included).
    """
    import datetime as dt
    import tempfile

    from voicefsm.records import CallStore, RecordWriter

    with tempfile.TemporaryDirectory(prefix="voicefsm-micro-") as folder:
        store = await CallStore.open(f"sqlite+aiosqlite:///{folder}/records.db")
        try:
            async with RecordWriter(store) as writer:
                now = dt.datetime.now(dt.UTC)

                def set_up(sid: str) -> None:
                    writer.call_started(sid, flow="EchoTest", caller="+15550000000", started_at=now)
                    writer.set_recording(sid, f"{folder}/{sid}.wav")
                    writer.transition(sid, source="", event="start", target="greet")
                    writer.turn(sid, speaker="agent", text="Echo test.", started_at=now, ended_at=now)
                    writer.transition(sid, source="greet", event="spoken", target="echo")

                # One call first, not timed: its imports and SQL compilation happen once per server.
                set_up("CA" + "f" * 32)
                await writer.flush()
                cpu, wall = time.process_time(), time.perf_counter()
                for index in range(calls):
                    set_up(f"CA{index:032x}")
                await writer.flush()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            await store.aclose()
    return {
        "calls": calls,
        "records_per_call": 5,
        "cpu_ms_per_call": round(cpu / calls * 1000, 2),
        "wall_ms_per_call": round(wall / calls * 1000, 2),
    }


async def run_all(level: str = "full") -> dict[str, Any]:
    """Every micro-benchmark at ``level`` (smoke, quick or full: how long each loop runs)."""
    min_time_s, repeats, sends, calls = LEVELS[level]
    frames = {"smoke": 20, "quick": 100, "full": 500}[level]
    results: dict[str, Any] = {
        "codec": codec(min_time_s, repeats),
        "messages": messages(min_time_s, repeats),
        "engine_path": await engine_path(min_time_s, repeats),
        "media_loop_echo": await media_loop_echo(min(calls, 100), frames, repeats),
        "flow_send": await flow_send(sends, repeats),
        "idle_call_memory": await idle_call_memory(calls),
        "record_writes": await record_writes(max(10, calls // 5)),
    }
    return results


def main() -> None:
    """Run the micro-benchmarks and print (or write) the JSON."""
    parser = argparse.ArgumentParser(description="voicefsm micro-benchmarks")
    parser.add_argument("--level", choices=sorted(LEVELS), default="full", help="how long each loop runs")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = asyncio.run(run_all(args.level))
    text = json.dumps(results, indent=1)
    if args.json_path:
        Path(args.json_path).write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
