"""Loop-lag watchdog: notice when anything blocks the event loop, and name the flow code that did.

One event loop serves every call of a server process, so flow code that blocks it (a sync
``requests.get`` in a hook, a CPU-heavy guard) freezes every other call's audio and turns.
The watchdog makes that visible:

- a **heartbeat** on the loop, a ``call_later`` chain every ``interval_s``, stamps the time;
- a **watcher thread** checks the stamp; when it is older than ``interval_s + threshold_s`` the
  loop is blocked *now*, and the thread samples the loop thread's stack
  (``sys._current_frames()``) and reads which flow callback was running (:data:`current_callback`).
  It works on any loop, uvloop included, and catches a callback that never returns;
- when the heartbeat runs again it knows how long the stall lasted, and reports it once
  (:class:`Stall`: duration, the callback, the innermost frame of user code, the stack), to the
  log and to ``on_stall`` (the server counts stalls in ``/metrics``).

The runtime names the callback it is running with :data:`current_callback`, which is used like a
``ContextVar`` (``token = current_callback.set("Booking.ask_day: on_enter_ask_day (flows/b.py:40)")``,
``current_callback.reset(token)``) or with :func:`running_callback`. A thread cannot read another
thread's context variables, so ``set`` also records the value for the running task, where the
watcher thread can find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "CurrentCallback",
    "LoopWatchdog",
    "Stall",
    "current_callback",
    "running_callback",
]

log = logging.getLogger(__name__)

_NO_TASK = object()


class CurrentCallback:
    """The flow callback running in this task: a ``ContextVar`` the watchdog's thread can read.

    ``get``/``set``/``reset`` behave as :class:`contextvars.ContextVar`'s. ``set`` and ``reset`` also
    record the value for the current asyncio task (or, outside a task, the current thread), which is
    what :meth:`running_in` reads from another thread.
    """

    def __init__(self, name: str) -> None:
        self._var: contextvars.ContextVar[str | None] = contextvars.ContextVar(name, default=None)
        self._by_task: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()
        self._by_thread: dict[int, str] = {}

    def get(self) -> str | None:
        """The callback running in the current context, or None."""
        return self._var.get()

    def set(self, value: str | None) -> contextvars.Token[str | None]:
        """Name the callback now running (None: none); returns the token for :meth:`reset`."""
        token = self._var.set(value)
        self._remember(value)
        return token

    def reset(self, token: contextvars.Token[str | None]) -> None:
        """Restore the value before the matching :meth:`set`."""
        self._var.reset(token)
        self._remember(self._var.get())

    def _remember(self, value: str | None) -> None:
        try:
            task: asyncio.Task[Any] | None = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is not None:
            if value is None:
                self._by_task.pop(task, None)
            else:
                self._by_task[task] = value
            return
        ident = threading.get_ident()
        if value is None:
            self._by_thread.pop(ident, None)
        else:
            self._by_thread[ident] = value

    def running_in(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> str | None:
        """From any thread: the callback the task now running on ``loop`` (in ``thread_id``) declared."""
        try:
            task = asyncio.current_task(loop)
        except RuntimeError:
            task = None
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the dict changed under us: treat as unknown
                found = self._by_task.get(task)
                if found is not None:
                    return found
        return self._by_thread.get(thread_id)


#: The flow callback running now, e.g. ``"Booking.ask_day: on_enter_ask_day (flows/booking.py:40)"``.
current_callback = CurrentCallback("voicefsm_current_callback")


@contextlib.contextmanager
def running_callback(flow: str, state: str | None, callback: str, where: str | None = None) -> Iterator[str]:
    """Name a flow callback for the watchdog while the block runs: ``with running_callback(...):``."""
    label = f"{flow}.{state}: {callback}" if state else f"{flow}: {callback}"
    if where:
        label += f" ({where})"
    token = current_callback.set(label)
    try:
        yield label
    finally:
        current_callback.reset(token)


@dataclass(frozen=True, slots=True)
class Stall:
    """The event loop did not run for ``duration_s`` seconds."""

    duration_s: float
    #: The flow callback running when the watcher looked (see :data:`current_callback`), if any.
    callback: str | None = None
    #: ``function (file:line)`` of the innermost frame outside the standard library and voicefsm.
    culprit: str | None = None
    #: The loop thread's stack as sampled during the stall, innermost last (empty when not sampled).
    stack: tuple[str, ...] = field(default_factory=tuple)
    #: Whether the loop was still blocked when this was reported (a report made by the watcher thread).
    ongoing: bool = False

    def describe(self) -> str:
        """One line for the log."""
        what = "still blocked" if self.ongoing else "was blocked"
        parts = [f"the event loop {what} for {self.duration_s * 1000:.0f} ms"]
        if self.callback:
            parts.append(f"running {self.callback}")
        if self.culprit:
            parts.append(f"at {self.culprit}")
        if not self.callback and not self.culprit:
            parts.append("(no flow callback was running; see the stack)" if self.stack else "(not sampled)")
        text = ", ".join(parts)
        return text + "; every call on this server waited. Run blocking code in a step (Do) or make it async"


_SKIP_PREFIXES = tuple(
    os.path.normcase(os.path.realpath(path)) + os.sep
    for path in {
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
        os.path.dirname(os.path.dirname(__file__)),  # voicefsm itself
    }
)


def _is_user_code(filename: str) -> bool:
    path = os.path.normcase(os.path.realpath(filename))
    return (
        not path.startswith(_SKIP_PREFIXES) and "site-packages" not in path and not filename.startswith("<")
    )


def _culprit(frame: FrameType | None) -> str | None:
    """The innermost frame of user code on a stack (the flow line that called the blocking library)."""
    innermost: str | None = None
    while frame is not None:
        code = frame.f_code
        where = f"{code.co_name} ({code.co_filename}:{frame.f_lineno})"
        if innermost is None:
            innermost = where
        if _is_user_code(code.co_filename):
            return where
        frame = frame.f_back
    return innermost


class LoopWatchdog:
    """Heartbeat on the running loop plus a watcher thread; use as ``async with LoopWatchdog(...)``.

    Stalls longer than ``threshold_s`` are logged and passed to ``on_stall`` (called on the loop,
    once per stall, after it ended). A stall still going on after ``ongoing_after_s`` is logged by
    the watcher thread while it lasts (the loop cannot report a callback that never returns).
    """

    def __init__(
        self,
        *,
        interval_s: float = 0.05,
        threshold_s: float = 0.1,
        ongoing_after_s: float = 2.0,
        on_stall: Callable[[Stall], None] | None = None,
        stack_depth: int = 12,
    ) -> None:
        if not (interval_s > 0 and threshold_s > 0):
            raise ValueError("interval_s and threshold_s must be positive")
        self.interval_s = interval_s
        self.threshold_s = threshold_s
        self.ongoing_after_s = ongoing_after_s
        self.on_stall = on_stall
        self.stack_depth = stack_depth
        #: Stalls seen since the watchdog started.
        self.stalls = 0
        self.longest_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._last_beat = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set by the watcher thread each time it samples a blocked loop (tests wait on it).
        self.sampled = threading.Event()
        self._sample: Stall | None = None  # written by the watcher thread, read on the loop
        self._sampled_beat = -1.0
        self._ongoing_logged_beat = -1.0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start on the running loop (call from the loop thread)."""
        if self._thread is not None:
            raise RuntimeError("the watchdog is already running")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last_beat = time.monotonic()
        self._stop.clear()
        self._handle = self._loop.call_later(self.interval_s, self._beat)
        self._thread = threading.Thread(target=self._watch, name="voicefsm-loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the heartbeat and the watcher thread (joined off the loop)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)

    async def __aenter__(self) -> LoopWatchdog:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- the heartbeat, on the loop -----------------------------------------------------------------

    def _beat(self) -> None:
        now = time.monotonic()
        lag = now - self._last_beat - self.interval_s
        beat_before = self._last_beat
        self._last_beat = now
        if self._loop is not None and not self._stop.is_set():
            self._handle = self._loop.call_later(self.interval_s, self._beat)
        if lag > self.threshold_s:
            sample = self._sample if self._sampled_beat == beat_before else None
            self._sample = None
            self._report(
                Stall(
                    duration_s=lag,
                    callback=sample.callback if sample else None,
                    culprit=sample.culprit if sample else None,
                    stack=sample.stack if sample else (),
                )
            )

    def _report(self, stall: Stall) -> None:
        self.stalls += 1
        self.longest_s = max(self.longest_s, stall.duration_s)
        log.warning("%s", stall.describe())
        if stall.stack:
            log.debug("stack of the loop thread during the stall:\n%s", "".join(stall.stack))
        if self.on_stall is not None:
            try:
                self.on_stall(stall)
            except Exception:
                log.exception("the watchdog's on_stall callback failed")

    # -- the watcher thread ---------------------------------------------------------------------------

    def _watch(self) -> None:
        period = min(self.interval_s, self.threshold_s) / 2
        while not self._stop.wait(period):
            beat = self._last_beat
            late = time.monotonic() - beat - self.interval_s
            if late <= self.threshold_s:
                continue
            if self._sampled_beat != beat:
                self._sample = self._take_sample(late)  # the sample first: the loop checks the beat
                self._sampled_beat = beat
                self.sampled.set()
            if late >= self.ongoing_after_s and self._ongoing_logged_beat != beat:
                self._ongoing_logged_beat = beat
                ongoing = self._take_sample(late)
                log.warning("%s", ongoing.describe())

    def _take_sample(self, late: float) -> Stall:
        frame = sys._current_frames().get(self._loop_thread)
        callback = (
            current_callback.running_in(self._loop, self._loop_thread) if self._loop is not None else None
        )
        stack = tuple(traceback.format_stack(frame, limit=self.stack_depth)) if frame is not None else ()
        return Stall(duration_s=late, callback=callback, culprit=_culprit(frame), stack=stack, ongoing=True)
