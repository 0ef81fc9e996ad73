"""What every streaming cloud recognizer does the same way: its lifecycle and its transcripts.

A recognizer subclassing :class:`StreamingRecognizer` calls ``_begin()`` when it starts (one start
per recognizer), starts its tasks with ``_spawn()``, reports transcripts through ``_heard_partial()``
and ``_heard_final()`` (echo discard included) and a failure through ``_fail()`` (``on_error`` hears
it once), and releases its sockets or SDK sessions in ``_release()``. ``stop()`` cancels and awaits
the tasks, then calls ``_release()``; it is idempotent, and a second caller waits for the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from voicefsm.errors import ProviderError
from voicefsm.providers.base import TextCallback

log = logging.getLogger(__name__)


class EchoWindow:
    """Whether a transcript arriving now may be the agent's own voice coming back down the line.

    Open while the agent speaks and for ``after_s`` seconds after it stops, measured on ``clock``
    (a monotonic clock in seconds; tests pass a fake one).
    """

    def __init__(self, after_s: float, clock: Callable[[], float]) -> None:
        self.after_s = after_s
        self._clock = clock
        self._speaking = False
        self._open_until = float("-inf")

    def set_speaking(self, speaking: bool) -> None:
        """The agent starts or stops talking; stopping keeps the window open for ``after_s``."""
        if speaking:
            self._speaking = True
        elif self._speaking:
            self._speaking = False
            self._open_until = self._clock() + self.after_s

    @property
    def open(self) -> bool:
        """True while transcripts should be treated as echo."""
        return self._speaking or self._clock() < self._open_until


class StreamingRecognizer:
    """The shared half of a SpeechToText that streams a call's audio to a service.

    ``finished`` is set when recognition has ended for good: a failure, the end of the audio, or
    :meth:`stop`. ``error`` holds the failure, if any. While the agent speaks (``set_speaking(True)``)
    and for ``echo_window_s`` after, final transcripts are dropped as the agent's own voice, and
    counted in ``discarded``; partials pass (the first lets the caller barge in) unless
    ``discard_partials_while_speaking``.
    """

    #: The provider's name in errors and logs, e.g. ``"azure-stt"``.
    provider: ClassVar[str]
    #: How long :meth:`stop` waits for its cancelled tasks before cancelling them again (an SDK may
    #: swallow one cancellation while it closes a socket).
    recancel_after_s: float = 1.0

    def __init__(
        self,
        *,
        echo_window_s: float,
        discard_partials_while_speaking: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_committed: TextCallback | None = None
        self.on_recognizing: TextCallback | None = None
        self.on_error: TextCallback | None = None
        #: Optional: called with each final transcript dropped as echo (for logs and records).
        self.on_discarded: TextCallback | None = None
        self.discard_partials_while_speaking = discard_partials_while_speaking
        self.error: ProviderError | None = None
        self.finished = asyncio.Event()
        self.discarded = 0
        self._clock = clock
        self._echo = EchoWindow(echo_window_s, clock)
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- the SpeechToText protocol's shared half --------------------------------------------

    def set_speaking(self, speaking: bool) -> None:
        """The agent starts or stops talking; final transcripts are dropped until ``echo_window_s`` after."""
        self._echo.set_speaking(speaking)

    async def stop(self) -> None:
        """Cancel and await every task, then release the service's resources; idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            await self._cancel_tasks()
            await self._release()
        finally:
            self.finished.set()
            self._stopped.set()

    # -- for subclasses ---------------------------------------------------------------------

    def _begin(self) -> None:
        """Mark the recognizer started; a second start is a programming error."""
        when = "twice" if self._started else "after stop()" if self._stopping else None
        if when is not None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.start() was called {when}; build one recognizer per call")
        self._started = True

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task that :meth:`stop` cancels and awaits; after ``stop()`` has begun it is a bug."""
        if self._stopping:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} started task {name!r} after stop(); it would leak")
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def _release(self) -> None:
        """Close what the tasks used (sockets, SDK sessions, clients); runs once, after the tasks ended."""

    def _ignoring(self) -> bool:
        """True once stopping or failed: transcripts and further failures are dropped."""
        return self._stopping or self.error is not None

    def _fail(self, error: ProviderError) -> None:
        """Recognition has failed for good: record it, end ``finished`` and tell ``on_error``, once."""
        if self._ignoring():
            return
        self.error = error
        self.finished.set()
        log.warning("speech recognition stopped: %s", error)
        self._deliver(self.on_error, str(error))

    def _heard_partial(self, text: str) -> None:
        """A partial transcript, on the loop: to ``on_recognizing`` unless blank, ignored or discarded."""
        if self._ignoring() or not text.strip():
            return
        if self.discard_partials_while_speaking and self._echo.open:
            self.discarded += 1
            return
        self._deliver(self.on_recognizing, text)

    def _heard_final(self, text: str) -> None:
        """A final transcript, on the loop: to ``on_committed``, or ``on_discarded`` while echo is likely."""
        if self._ignoring() or not text.strip():
            return
        if self._echo.open:
            self.discarded += 1
            log.debug("discarded a transcript heard while the agent spoke (echo)")
            self._deliver(self.on_discarded, text)
            return
        self._deliver(self.on_committed, text)

    # -- internals --------------------------------------------------------------------------

    async def _cancel_tasks(self) -> None:
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=self.recancel_after_s)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s task %s failed", self.provider, task.get_name(), exc_info=task.exception())

    @staticmethod
    def _deliver(callback: TextCallback | None, text: str) -> None:
        if callback is None:
            return
        try:
            callback(text)
        except Exception:
            log.exception("a recognizer callback raised")
