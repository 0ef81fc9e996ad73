"""A step left to finish after a hang-up leaves nothing behind when the call's wind-down is cut short."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from voicefsm.flow.kinds.do import Do, DoActivity
from voicefsm.runtime.clock import LoopClock


class SlowWriter:
    """A flow whose write takes far longer than anyone waits."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def book(self) -> bool:
        self.started.set()
        await asyncio.Event().wait()  # never finishes by itself
        return True


class Host:
    """Just what a Do activity asks of the runtime."""

    time_is_simulated = False

    def __init__(self, flow: SlowWriter) -> None:
        self.stubs: dict[str, object] = {}
        self.clock = LoopClock()
        self.flow = flow
        self._tokens = itertools.count(1)

    def next_token(self) -> int:
        return next(self._tokens)

    def time_left(self) -> float | None:
        return None

    def set_builtin(self, *_: Any) -> None: ...
    def notify(self, *_: Any) -> None: ...
    def post(self, _message: object) -> None: ...

    async def run_flow_code(self, function: Any, *args: Any, label: str = "") -> Any:
        return await function(*args)


async def test_cancelling_the_wait_for_a_finishing_step_still_cancels_and_awaits_its_tasks() -> None:
    flow = SlowWriter()
    activity = DoActivity(Do("book", on_hangup="finish", finish_s=5.0), Host(flow))
    before = asyncio.all_tasks()
    await activity.enter()
    await asyncio.wait_for(flow.started.wait(), 5)
    stopping = asyncio.create_task(activity.stop(hung_up=True))  # waits up to finish_s for the write
    await asyncio.sleep(0)
    stopping.cancel()  # the driver's grace ran out (or the server shuts down) first
    await asyncio.gather(stopping, return_exceptions=True)
    left = [task.get_name() for task in asyncio.all_tasks() - before if not task.done()]
    assert left == [], f"tasks outlived the call: {left}"
