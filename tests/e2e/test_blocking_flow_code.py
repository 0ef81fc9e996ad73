"""Flow code that blocks delays only its own call: a served flow whose hook sleeps 3 s.

``voicefsm serve tests/e2e/flows/blocking.py`` (local TTS) takes calls placed as Twilio places
them. One caller's ``on_enter_ask`` blocks for 3 s (``time.sleep``, as a ``requests.get`` would);
a second caller who rings 0.5 s into that block must hear the greeting as soon as a caller of a
quiet server does (issue 19: within 300 ms). ``voicefsm test --faults`` fails the flow naming the
hook and its file:line, quickly.

"Greeted after" is from the stream's ``start`` message to the first agent audio frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from cli.test_cli import Served, clean_env, http_for, live_feed, stream_from_twiml, voicefsm_serve

from voicefsm.flow import load_flow
from voicefsm.telephony.twilio.client import TwilioStreamClient

FLOW = Path(__file__).resolve().parent / "flows" / "blocking.py"
SLOW_CALLER = "+15550001234"  # tests/e2e/flows/blocking.py blocks for this one
QUICK_CALLERS = ("+15550000001", "+15550000002", "+15550000003")
BLOCK_S = 3.0
SECOND_CALL_AFTER_S = 0.5
WITHIN_S = 0.3
CALL_TIMEOUT_S = 15

__all__ = ["http_for"]  # the fixture, shared with tests/cli


@contextlib.asynccontextmanager
async def started_call(
    served: Served, http: httpx.AsyncClient, call_sid: str, caller: str
) -> AsyncIterator[tuple[TwilioStreamClient, float]]:
    """Ring (the voice webhook), open the media stream; yields the phone and when ``start`` was sent."""
    form = {"CallSid": call_sid, "From": caller, "To": "+15550009999", "CallStatus": "ringing"}
    webhook = await http.post("/twilio/voice", data=form)
    assert webhook.status_code == 200, webhook.text
    url, parameters = stream_from_twiml(webhook.text)
    twilio = TwilioStreamClient(url, call_sid=call_sid, custom_parameters=parameters)
    try:
        await twilio.open(start=False)
        started_at = time.monotonic()
        await twilio.start()
        yield twilio, started_at
    finally:
        await twilio.close()


async def greeted_after(served: Served, http: httpx.AsyncClient, call_sid: str, caller: str) -> float:
    """One call that hangs up once greeted: seconds from the stream's start to the first agent audio."""
    async with started_call(served, http, call_sid, caller) as (twilio, started_at):
        (first, *_) = await twilio.wait_for("media", timeout_s=CALL_TIMEOUT_S)
        await twilio.stop()
    return first.at - started_at


async def test_a_hook_blocking_one_call_for_3_s_does_not_delay_another_callers_greeting(
    tmp_path: Path, http_for: Callable[[Served], httpx.AsyncClient]
) -> None:
    async with voicefsm_serve(tmp_path, str(FLOW)) as served:
        http = http_for(served)
        await greeted_after(served, http, "CA" + "0" * 32, QUICK_CALLERS[0])  # warm-up: first-call costs
        quiet = await greeted_after(served, http, "CA" + "1" * 32, QUICK_CALLERS[1])

        async with started_call(served, http, "CA" + "2" * 32, SLOW_CALLER) as (blocked, _):
            # The greeting is played (its mark echoed): the chart moves to `ask`, whose hook blocks.
            await blocked.wait_until(lambda: "greet" in {m.split("#")[0] for m in blocked.played_marks})
            greeted_at = time.monotonic()
            await asyncio.sleep(SECOND_CALL_AFTER_S)  # the second caller rings 0.5 s into the block
            during = await greeted_after(served, http, "CA" + "3" * 32, QUICK_CALLERS[2])
            second_done = time.monotonic()
            # The blocked call really was blocked: its question comes after the hook's 3 s.
            await blocked.wait_until(
                lambda: any((m.name or "").startswith("ask#") for m in blocked.items("mark")),
                timeout_s=CALL_TIMEOUT_S,
            )
            asked_after = time.monotonic() - greeted_at
        metrics = (await http.get("/metrics")).text
        # Stopped as an operator stops it, with the blocked call gone: it drains and exits cleanly.
        served.process.send_signal(signal.SIGTERM)
        assert await served.exit_code(timeout_s=CALL_TIMEOUT_S) == 0

    print(f"greeted after {quiet * 1000:.0f} ms on a quiet server, {during * 1000:.0f} ms during the block")
    assert second_done - greeted_at < BLOCK_S, "the second call was measured after the block had ended"
    assert asked_after >= BLOCK_S - 0.05, f"the hook did not block its own call ({asked_after:.2f} s)"
    assert during - quiet < WITHIN_S, f"greeted after {during:.3f} s during the block, {quiet:.3f} s quiet"
    stderr = served.stderr()
    assert "Blocking.ask: on_enter_ask (" in stderr and "blocked for more than 50 ms" in stderr, stderr
    assert f"{FLOW}:" in stderr
    (stalled,) = (
        line for line in metrics.splitlines() if line.startswith("voicefsm_loop_stall_seconds_total")
    )
    assert float(stalled.split()[-1]) < 1.0, stalled  # the 3 s were spent off the event loop


def test_voicefsm_test_faults_fails_the_blocking_flow_naming_the_hook_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "voicefsm", "test", str(FLOW), "--faults"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Blocking.ask: on_enter_ask (" in done.stdout
    hook_line = inspect.getsourcelines(load_flow(FLOW).on_enter_ask)[1]
    assert f"{FLOW}:{hook_line}) blocked for more than 50 ms" in done.stdout
    assert took < 20, f"voicefsm test --faults took {took:.1f} s"


async def test_serve_on_fake_resources_says_so_and_a_call_finds_a_demo_order(
    tmp_path: Path, http_for: Callable[[Served], httpx.AsyncClient]
) -> None:
    order_status = FLOW.parents[3] / "flows" / "order_status.py"
    async with voicefsm_serve(tmp_path, str(order_status), VOICEFSM_FAKE_RESOURCES="1") as served:
        assert served.process.stdout is not None
        async with asyncio.timeout(10):
            warning = (await served.process.stdout.readline()).decode()
        assert "fake resources" in warning and "shop" in warning, [*served.banner, warning]
        http = http_for(served)
        call_sid = "CA" + "4" * 32
        async with (
            started_call(served, http, call_sid, QUICK_CALLERS[0]) as (twilio, _),
            live_feed(served, call_sid) as feed,
        ):
            await feed.until_state("ask_number")
            await twilio.wait_until(lambda: any(m.startswith("ask_number#") for m in twilio.played_marks))
            for digit in "412241":
                await twilio.press(digit)
            await feed.until_state("tell")
            assert await twilio.wait_closed(timeout_s=CALL_TIMEOUT_S) == 1000
        served.process.send_signal(signal.SIGTERM)
        assert await served.exit_code(timeout_s=CALL_TIMEOUT_S) == 0
