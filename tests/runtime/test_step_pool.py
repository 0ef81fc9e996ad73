"""The step pool runs sync flow code off the loop, bounded, and counts the threads it had to abandon."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from voicefsm.runtime.step_pool import StepPool, run_sync, step_pool

WAIT_S = 5.0

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_a_sync_function_runs_in_a_pool_thread_with_the_callers_context() -> None:
    pool = StepPool(2)
    who.set("caller 7")

    def work(x: int) -> tuple[int, str, str]:
        return x * 2, who.get(), threading.current_thread().name

    doubled, seen, thread = await pool.run(work, 21)
    assert (doubled, seen) == (42, "caller 7")
    assert thread.startswith("voicefsm-step-") and thread != threading.current_thread().name
    assert pool.healthy and pool.abandoned == 0
    pool.shutdown()


async def test_an_exception_reaches_the_awaiting_task() -> None:
    pool = StepPool(1)

    def broken() -> None:
        raise LookupError("no such order")

    with pytest.raises(LookupError, match="no such order"):
        await pool.run(broken)
    pool.shutdown()


async def test_a_timed_out_step_is_counted_as_abandoned_until_its_thread_returns() -> None:
    pool = StepPool(1, abandoned_limit=1)
    started, release = threading.Event(), threading.Event()

    def stuck() -> str:
        started.set()
        release.wait(WAIT_S)
        return "late"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.run(stuck), timeout=0.05)
    assert started.is_set()
    assert (pool.abandoned, pool.abandoned_total) == (1, 1)
    assert not pool.healthy
    problem = pool.problem()
    assert problem is not None and "1 sync flow step(s) timed out and still hold a thread" in problem

    release.set()
    # One worker: this job runs only after the abandoned one returned (and was uncounted).
    assert await pool.run(lambda: "next") == "next"
    assert (pool.abandoned, pool.abandoned_total) == (0, 1)
    assert pool.healthy and pool.problem() is None
    pool.shutdown()


async def test_a_job_given_up_before_it_started_is_not_abandoned() -> None:
    pool = StepPool(1)
    started, release = threading.Event(), threading.Event()

    def first() -> None:
        started.set()
        release.wait(WAIT_S)

    running = asyncio.create_task(pool.run(first))
    assert await asyncio.to_thread(started.wait, WAIT_S)
    queued = asyncio.create_task(pool.run(lambda: "never"))
    await asyncio.sleep(0)  # let it queue behind the running job
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert pool.abandoned == 0
    release.set()
    await running
    assert pool.abandoned_total == 0
    pool.shutdown()


async def test_the_pool_is_bounded() -> None:
    pool = StepPool(2)
    inside = 0
    most = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=WAIT_S)

    def job() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        gate.wait()  # pairs of jobs meet here, so two really run at once
        with lock:
            inside -= 1

    await asyncio.gather(*(pool.run(job) for _ in range(6)))
    assert most == 2
    assert len(pool._threads) == 2
    pool.shutdown()


async def test_run_sync_uses_the_process_wide_pool() -> None:
    assert await run_sync(sum, [1, 2, 3]) == 6
    assert step_pool() is step_pool()


@pytest.mark.parametrize("escape", [StopIteration, SystemExit])
async def test_stop_iteration_or_system_exit_in_flow_code_reaches_the_caller_as_an_error(
    escape: type[BaseException],
) -> None:
    def flow_code() -> None:
        raise escape()  # e.g. next() on an empty generator in a guard, or sys.exit() in a step

    async with asyncio.timeout(5):  # asyncio cannot carry StopIteration in a future: it would never resolve
        with pytest.raises(RuntimeError, match=f"{escape.__name__} raised in flow code"):
            await run_sync(flow_code)
