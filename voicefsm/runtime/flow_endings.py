"""The long-running parts of a call's last state, and task cleanup the runtime shares.

Each function owns the tasks it starts and has cancelled and awaited them when it returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voicefsm.flow.kinds.base import cancel_and_wait
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import Clock

__all__ = ["cancel_and_wait", "echo_caller", "wait_for_hangup"]


async def echo_caller(call: Call, clock: Clock, max_s: float) -> None:
    """Send every caller frame straight back until the call ends or ``max_s`` passes (Asterisk's Echo())."""
    if call.stt is not None:
        await call.stop_stt()  # the recognizer reads the caller's audio; the echo needs it
    call.clear_inbound()  # what the caller said during the greeting is not echoed late
    call.inbound_sink = call.put_outbound
    try:
        waiter = asyncio.create_task(call.disconnected.wait(), name="flow-echo")
        await _first_of(waiter, clock.sleep(max_s), "flow-echo-limit")
    finally:
        call.inbound_sink = None


async def wait_for_hangup(call: Call, clock: Clock, wait_s: float) -> None:
    """Wait until the call has ended, at most ``wait_s`` seconds."""
    waiter = asyncio.create_task(call.disconnected.wait(), name="flow-hangup-wait")
    await _first_of(waiter, clock.sleep(wait_s), "flow-hangup-limit")


async def _first_of(task: asyncio.Task[Any], deadline: Any, name: str) -> None:
    limit = asyncio.create_task(deadline, name=name)
    try:
        await asyncio.wait({task, limit}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(task, limit)
