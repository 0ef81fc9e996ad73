"""The loop-lag watchdog names the flow callback that blocked the loop, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
import uvloop

from voicefsm.runtime.watchdog import LoopWatchdog, Stall, current_callback, running_callback

BLOCK_LIMIT_S = 5.0


def block_the_loop_until_sampled(watchdog: LoopWatchdog) -> None:
    """What a flow's sync `requests.get` does: hold the loop thread (here until the watcher has looked)."""
    assert watchdog.sampled.wait(BLOCK_LIMIT_S), "the watcher thread never sampled the blocked loop"


async def stall_once(**options: float) -> tuple[LoopWatchdog, Stall]:
    seen: list[Stall] = []
    reported = asyncio.Event()

    def on_stall(stall: Stall) -> None:
        seen.append(stall)
        reported.set()

    async with LoopWatchdog(interval_s=0.02, threshold_s=0.1, on_stall=on_stall, **options) as watchdog:
        await asyncio.sleep(0)  # let the first heartbeat get scheduled before the stall
        with running_callback("Blocker", "ask_day", "on_enter_ask_day", "flows/blocker.py:12"):
            block_the_loop_until_sampled(watchdog)
        await asyncio.wait_for(reported.wait(), BLOCK_LIMIT_S)
    return watchdog, seen[0]


async def test_a_blocking_callback_is_named_with_its_flow_state_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voicefsm.runtime.watchdog")
    watchdog, stall = await stall_once()

    assert stall.duration_s > 0.1
    assert stall.callback == "Blocker.ask_day: on_enter_ask_day (flows/blocker.py:12)"
    assert stall.culprit is not None
    assert "block_the_loop_until_sampled" in stall.culprit and "test_watchdog.py" in stall.culprit
    assert any("block_the_loop_until_sampled" in line for line in stall.stack)
    assert watchdog.stalls == 1
    message = caplog.records[-1].getMessage()
    assert "the event loop was blocked for" in message
    assert "Blocker.ask_day: on_enter_ask_day" in message


def test_the_watchdog_works_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        _, stall = runner.run(stall_once())
    assert stall.callback is not None and stall.callback.startswith("Blocker.ask_day")
    assert stall.culprit is not None and "block_the_loop_until_sampled" in stall.culprit


async def test_a_stall_that_goes_on_is_logged_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicefsm.runtime.watchdog")
    logged = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "still blocked" in record.getMessage():
                logged.set()

    flag = Flag()
    logging.getLogger("voicefsm.runtime.watchdog").addHandler(flag)
    try:
        async with LoopWatchdog(interval_s=0.02, threshold_s=0.05, ongoing_after_s=0.2):
            await asyncio.sleep(0)
            with running_callback("Looper", None, "is_free"):
                # A callback that has not returned yet: only the watcher thread can report it.
                assert logged.wait(BLOCK_LIMIT_S), "no report while the loop was still blocked"
    finally:
        logging.getLogger("voicefsm.runtime.watchdog").removeHandler(flag)
    ongoing = [r.getMessage() for r in caplog.records if "still blocked" in r.getMessage()]
    assert "running Looper: is_free" in ongoing[0]


async def test_current_callback_reads_like_a_context_variable_and_is_restored() -> None:
    assert current_callback.get() is None
    token = current_callback.set("Outer.s: guard")
    with running_callback("Inner", "t", "action") as label:
        assert current_callback.get() == label == "Inner.t: action"
    assert current_callback.get() == "Outer.s: guard"
    current_callback.reset(token)
    assert current_callback.get() is None
    loop = asyncio.get_running_loop()
    assert current_callback.running_in(loop, threading.get_ident()) is None
