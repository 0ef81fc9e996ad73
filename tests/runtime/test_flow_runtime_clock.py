"""Clocks for conversation timers: simulated time that never really waits, and real time."""

from __future__ import annotations

import asyncio
import time

import pytest

from voicefsm.runtime.clock import LoopClock, VirtualClock


async def test_virtual_sleepers_wake_in_deadline_order_without_real_waiting() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    started = time.perf_counter()
    await asyncio.gather(
        sleeper("six", 6), sleeper("three", 3), sleeper("also three", 3), sleeper("hour", 3600)
    )
    assert time.perf_counter() - started < 0.5
    assert woke == [("three", 3.0), ("also three", 3.0), ("six", 6.0), ("hour", 3600.0)]


async def test_virtual_time_stands_still_while_anything_can_run() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(200):
            seen.append(clock.now())
            await asyncio.sleep(0)

    await asyncio.gather(busy(), clock.sleep(1.0))
    assert set(seen) == {0.0}
    assert clock.now() == 1.0


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.pending == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending == 0
    await clock.sleep(1)
    assert clock.now() == 1.0


async def test_advance_moves_time_by_hand() -> None:
    clock = VirtualClock(start=100.0)
    task = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    clock.advance(5)
    await task
    assert clock.now() == 105.0
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    clock.close()


async def test_loop_clock_is_real_time() -> None:
    clock = LoopClock()
    before = clock.now()
    await clock.sleep(0.01)
    assert clock.now() - before >= 0.01
