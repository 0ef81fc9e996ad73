"""Clocks for conversation timers (no-input, inter-digit, echo limit): real time or simulated time.

The flow runtime never sleeps directly: it asks a :class:`Clock`. In production that is
:class:`LoopClock` (the event loop's monotonic time and ``asyncio.sleep``). Tests use
:class:`VirtualClock`: time stands still while anything on the loop can run, and jumps to the
next timer the moment everything is waiting, so a 6 s no-input timeout takes no real time and
fires in the same order every run.

I/O deadlines (a TTS request, a REST call, a playback mark) are not conversation timers: they
stay on real time (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from typing import Protocol


class Clock(Protocol):
    """Where the runtime's conversation timers get their time."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` have passed on this clock. Cancellable."""
        ...


class LoopClock:
    """Real time: the running loop's monotonic clock and ``asyncio.sleep``."""

    def now(self) -> float:
        """The running loop's time."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)


_RUNNING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VirtualClock] = weakref.WeakKeyDictionary()


class VirtualClock:
    """Simulated time that advances only when the event loop has nothing else to do.

    While a sleeper is pending, a callback (not a task) checks the loop once per iteration;
    after ``idle_turns`` consecutive iterations with no other callback ready (the loop polls
    I/O in between, so data already sent on a local socket is seen first), time jumps to the
    earliest deadline and the sleepers due then wake, in deadline order (ties: first come,
    first woken). With no sleeper pending nothing runs.

    Work done in other threads (``asyncio.to_thread``, SDK threads) is invisible to it: time
    may jump while such work is in flight. Use it with in-loop fakes.

    Idleness is read from the loop's ready queue (CPython's ``_ready``); on a loop without one
    (e.g. uvloop) it falls back to waiting ``fallback_turns`` iterations.
    """

    def __init__(self, start: float = 0.0, *, idle_turns: int = 2, fallback_turns: int = 50) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._live = 0
        self._idle = 0
        self._idle_turns = idle_turns
        self._fallback_turns = fallback_turns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.Handle | None = None

    def now(self) -> float:
        """The simulated time, in seconds."""
        return self._now

    @property
    def pending(self) -> int:
        """How many sleepers are waiting."""
        return self._live

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (no real waiting once the loop is idle)."""
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a VirtualClock serves one event loop; make one per test")
        other = _RUNNING.get(loop)
        if other is not None and other is not self and other.pending > 0:
            raise RuntimeError(
                "two VirtualClocks are running on one event loop: each waits for the loop to go idle and "
                "the other's check keeps it busy, so time stands still for both. Give the calls one "
                "shared clock, e.g. FlowLine(flow, clock=clock) for each"
            )
        _RUNNING[loop] = self
        waiter: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        self._live += 1
        self._schedule_tick()
        try:
            await waiter
        finally:
            self._live -= 1
            if not waiter.done():
                waiter.cancel()  # left in the heap; dropped when it reaches the top

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` now and wake every sleeper that is then due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        self._wake_due()

    def close(self) -> None:
        """Stop watching the loop (sleepers still pending stay asleep until cancelled)."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    # -- the idle watcher -----------------------------------------------------------------

    def _schedule_tick(self) -> None:
        if self._tick_handle is None and self._loop is not None and not self._loop.is_closed():
            self._tick_handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        if self._live <= 0:
            self._idle = 0
            return
        ready = getattr(self._loop, "_ready", None)
        if ready is None:
            self._idle += 1
            idle_enough = self._idle >= self._fallback_turns
        else:
            self._idle = 0 if len(ready) else self._idle + 1
            idle_enough = self._idle >= self._idle_turns
        if idle_enough:
            self._idle = 0
            self._jump()
        self._schedule_tick()

    def _jump(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if self._sleepers:
            self._now = max(self._now, self._sleepers[0][0])
            self._wake_due()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
