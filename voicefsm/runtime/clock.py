"""Clocks for conversation timers (no-input, inter-digit, echo limit): real time or simulated time.

The flow runtime never sleeps directly: it asks a :class:`Clock`. In production that is
:class:`LoopClock` (the event loop's monotonic time and ``asyncio.sleep``). Tests use
:class:`VirtualClock`: time stands still while anything on the loop can run, and jumps to the
next timer the moment everything is waiting, so a 6 s no-input timeout takes no real time and
fires in the same order every run. ``voicefsm chat`` uses :class:`ManualClock`, which moves only
when told (by the agent's audio, or by the caller choosing silence), never while the keyboard
is awaited. Both keep their sleepers in one :class:`SleeperHeap`.

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


class SleeperHeap:
    """Simulated time and the sleepers waiting on it, woken in deadline order (ties: first come first).

    Nothing here moves time by itself: :meth:`advance_to` does, and the subclasses decide when.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._live = 0

    def now(self) -> float:
        """The simulated time, in seconds."""
        return self._now

    @property
    def pending(self) -> int:
        """How many sleepers are waiting."""
        return self._live

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` on. Cancellable."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = self._loop_for_sleep().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        self._live += 1
        self._sleeper_added()
        try:
            await waiter
        finally:
            self._live -= 1
            if not waiter.done():
                waiter.cancel()  # left in the heap; dropped when it reaches the top

    def advance_to(self, when: float) -> None:
        """Move the clock to ``when`` (never back) and wake every sleeper then due."""
        self._now = max(self._now, when)
        self._wake_due()

    def next_deadline(self) -> float | None:
        """When the earliest live sleeper is due; None when nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def _loop_for_sleep(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _sleeper_added(self) -> None:
        """A hook for clocks that watch the loop."""

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)


class ManualClock(SleeperHeap):
    """Simulated time that moves only when told to: by the agent's audio, or by the caller's silence.

    Unlike :class:`VirtualClock` it never moves while the loop waits for something outside it
    (the keyboard), so ``voicefsm chat`` can wait for the person typing without timers firing.
    """

    #: Shorter sleeps than this just move the clock: a deadline recomputed in floating point can land
    #: a hair after the instant the clock was moved to, and must not need a second skip.
    EPSILON_S = 1e-6

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been moved ``seconds`` on. Cancellable."""
        if seconds <= self.EPSILON_S:
            self._now += max(seconds, 0.0)
            await asyncio.sleep(0)
            return
        await super().sleep(seconds)

    def skip(self) -> float | None:
        """Jump to the earliest pending deadline and wake what is due; the seconds skipped, or None."""
        deadline = self.next_deadline()
        if deadline is None:
            return None
        before = self._now
        self.advance_to(deadline)
        return self._now - before


_RUNNING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VirtualClock] = weakref.WeakKeyDictionary()


class VirtualClock(SleeperHeap):
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
        super().__init__(start)
        self._idle = 0
        self._idle_turns = idle_turns
        self._fallback_turns = fallback_turns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.Handle | None = None

    def _loop_for_sleep(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
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
        return loop

    def _sleeper_added(self) -> None:
        self._schedule_tick()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` now and wake every sleeper that is then due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.advance_to(self._now + seconds)

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
        deadline = self.next_deadline()
        if deadline is not None:
            self.advance_to(deadline)
