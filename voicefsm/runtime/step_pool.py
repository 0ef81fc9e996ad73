"""A dedicated, bounded thread pool for sync flow code (plain ``def`` steps and callbacks).

Sync flow code must not run on the event loop (it would freeze every call), so it runs here:
at most ``max_workers`` threads, separate from asyncio's default executor and from the pool
FastAPI/anyio use for sync endpoints, so a flow cannot starve either.

A thread cannot be killed. When the caller stops waiting (the step timed out, the caller hung
up) the job keeps its thread until the code returns; the pool counts such **abandoned**
threads and reports itself unhealthy while ``abandoned_limit`` or more are still running (the
server's health check and ``/metrics`` read :attr:`StepPool.healthy` and
:attr:`StepPool.abandoned`). Workers are daemon threads: a job stuck for ever does not keep the
process from exiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

__all__ = ["StepPool", "run_sync", "step_pool"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Default number of worker threads of the process-wide pool.
DEFAULT_WORKERS = 16


@dataclass(slots=True)
class _Job:
    run: Callable[[], Any]
    future: concurrent.futures.Future[Any]
    name: str


class StepPool:
    """Runs sync callables in at most ``max_workers`` daemon threads; ``await pool.run(fn, *args)``."""

    def __init__(
        self,
        max_workers: int = DEFAULT_WORKERS,
        *,
        abandoned_limit: int | None = None,
        name: str = "voicefsm-step",
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be 1 or more, not {max_workers}")
        self.max_workers = max_workers
        #: Unhealthy while this many abandoned jobs are still running (default: half the workers).
        self.abandoned_limit = abandoned_limit if abandoned_limit is not None else max(1, max_workers // 2)
        self.name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._running = 0
        self._abandoned = 0
        self._abandoned_total = 0
        self._closed = False
        self._numbers = itertools.count(1)

    # -- what the health check reads ---------------------------------------------------------------

    @property
    def abandoned(self) -> int:
        """Jobs whose caller stopped waiting and whose thread is still running."""
        return self._abandoned

    @property
    def abandoned_total(self) -> int:
        """Jobs abandoned since the pool was made (finished or not)."""
        return self._abandoned_total

    @property
    def busy(self) -> int:
        """Threads running a job now."""
        return self._running

    @property
    def threads(self) -> int:
        """Threads started so far (they stay, idle, for the next jobs): at most ``max_workers``."""
        return len(self._threads)

    @property
    def healthy(self) -> bool:
        """False while ``abandoned_limit`` or more abandoned jobs still hold a thread."""
        return self._abandoned < self.abandoned_limit

    def problem(self) -> str | None:
        """Why the pool is unhealthy, for the health endpoint; None when it is healthy."""
        if self.healthy:
            return None
        return (
            f"{self._abandoned} sync flow step(s) timed out and still hold a thread of the step pool "
            f"(limit {self.abandoned_limit}, {self.max_workers} threads): flow code is stuck; "
            "make it async or give its I/O a timeout"
        )

    # -- running -------------------------------------------------------------------------------

    async def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function(*args, **kwargs)`` in a pool thread (with the caller's context variables).

        Cancelling the awaiting task (a timeout, a hang-up) gives the job up: a job not started
        yet is dropped; one already running is counted as abandoned until it returns.
        """
        future = self.submit(function, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():
                self._abandon(future, getattr(function, "__qualname__", repr(function)))
            raise

    def submit(
        self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``function`` and return its concurrent future (prefer :meth:`run` on a loop)."""
        context = contextvars.copy_context()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        name = getattr(function, "__qualname__", repr(function))
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the step pool {self.name} is shut down")
            if self._idle == 0 and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{next(self._numbers)}", daemon=True
                )
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1  # a thread is spoken for (it will go idle again after the job)
        self._queue.put(_Job(lambda: context.run(function, *args, **kwargs), future, name))
        return future

    def _abandon(self, future: concurrent.futures.Future[Any], name: str) -> None:
        with self._lock:
            self._abandoned += 1
            self._abandoned_total += 1
            now = self._abandoned
        log.warning(
            "gave up waiting for the sync step %s; its thread keeps running until it returns "
            "(%d abandoned, unhealthy at %d)",
            name,
            now,
            self.abandoned_limit,
        )

        def finished(_: concurrent.futures.Future[Any]) -> None:
            with self._lock:
                self._abandoned -= 1
            log.info("the abandoned sync step %s returned", name)

        future.add_done_callback(finished)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.future.set_running_or_notify_cancel():
                with self._lock:
                    self._running += 1
                try:
                    job.future.set_result(job.run())
                except (StopIteration, SystemExit, KeyboardInterrupt) as exc:
                    # A future cannot carry StopIteration (asyncio refuses it and the await would never
                    # end), and SystemExit would end the event loop: hand over an ordinary error.
                    error = RuntimeError(f"{type(exc).__name__} raised in flow code")
                    error.__cause__ = exc
                    job.future.set_exception(error)
                except BaseException as exc:  # handed to the awaiting task, which decides
                    job.future.set_exception(exc)
                finally:
                    with self._lock:
                        self._running -= 1
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Stop taking jobs and let idle threads exit; jobs still running are left to finish (daemons)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._queue.put(None)


_DEFAULT: StepPool | None = None
_DEFAULT_LOCK = threading.Lock()


def step_pool() -> StepPool:
    """The process-wide pool the runtime runs sync flow code on (made on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = StepPool()
        return _DEFAULT


async def run_sync(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``await run_sync(fn, *args)``: run sync flow code on the process-wide :func:`step_pool`."""
    return await step_pool().run(function, *args, **kwargs)
