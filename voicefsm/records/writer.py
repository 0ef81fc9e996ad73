"""A non-blocking front for the call's hot path: records are queued now and written by one task.

The runtime calls plain methods (``writer.turn(...)``) that never await and never raise; one
writer task owned by the ``RecordWriter`` writes them in order, each in its own transaction. When
the database fails, the call goes on: a write is retried a few times, then dropped and counted in
``dropped``, with one warning per kind of record (no phone numbers or transcripts in it). After a
record is dropped the writer stops retrying until a write succeeds again, so a dead database
cannot make the queue grow behind retries.

The sync methods must be called on the event loop's thread (marshal SDK callbacks with
``loop.call_soon_threadsafe`` first).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voicefsm.records.errors import RecordsError
from voicefsm.records.jsonvalue import decode_value, encode_value
from voicefsm.records.models import Direction, Speaker, Via
from voicefsm.records.store import CallStore, utcnow

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY_S = 0.1
DEFAULT_WRITE_TIMEOUT_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 5.0
_REASON_CHARS = 200
# Not worth retrying: the record itself is wrong (unknown call, bad field), not the database.
_PERMANENT = (RecordsError, ValueError, TypeError)


@dataclass(slots=True)
class _Write:
    kind: str
    call_sid: str
    run: Callable[[], Awaitable[object]]


class RecordWriter:
    """Queues call records without blocking and writes them, in order, through one owned task."""

    def __init__(
        self,
        store: CallStore,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        retries: int = DEFAULT_RETRIES,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[_Write] = asyncio.Queue(maxsize=max_queue)
        self._max_queue = max_queue
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._write_timeout_s = write_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._degraded = False  # the last write failed for good: try once, don't retry, until one works
        self._inflight: _Write | None = None
        self._enqueued = 0
        self._done = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._warned: set[str] = set()
        #: Records written.
        self.written = 0
        #: Records lost: the database refused them after retries, the queue was full, or the writer closed.
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Records queued (or being written) and not yet written or dropped."""
        return self._enqueued - self._done

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (on the running loop); records queued before it are written first."""
        if self._closed:
            raise RuntimeError("RecordWriter.start() after aclose(): make a new RecordWriter")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voicefsm-record-writer")

    def flush(self) -> Coroutine[Any, Any, None]:
        """Wait until every record queued before this call is written (or dropped): ``await w.flush()``.

        The mark is taken when ``flush()`` is called, so a flush wrapped in a task still waits only
        for the records queued before it.
        """
        target = self._enqueued
        if self._done < target and self._task is None and not self._closed:
            raise RuntimeError("RecordWriter.flush() before start(): nothing would write the queued records")
        return self._wait_done(target)

    async def aclose(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting records, drain the queue for up to ``drain_timeout_s``, then stop the writer task.

        Records still queued at the deadline are dropped and counted. The store is left open.
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            deadline = self._drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            try:
                async with asyncio.timeout(deadline):
                    await self._wait_done(self._enqueued)
            except TimeoutError:
                pass
            task.cancel()
            await asyncio.wait({task})
        lost = self._queue.qsize() + (1 if self._inflight is not None else 0)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._inflight = None
        if lost:
            self.dropped += lost
            log.warning("call records: %d queued records were not written before shutdown", lost)
        self._done = self._enqueued
        self._wake()
        if self.dropped:
            log.warning(
                "call records: %d records in all were not written (RecordWriter.dropped)", self.dropped
            )

    async def __aenter__(self) -> RecordWriter:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # -- records (never await, never raise) -------------------------------------------------------------

    def call_started(
        self,
        call_sid: str,
        *,
        flow: str,
        caller: str | None,
        direction: Direction = "inbound",
        started_at: dt.datetime | None = None,
    ) -> None:
        """Queue :meth:`CallStore.call_started`; the time defaults to now."""
        at = started_at or self._clock()
        self._put(
            "call_started",
            call_sid,
            lambda: self._store.call_started(
                call_sid, flow=flow, caller=caller, direction=direction, started_at=at
            ),
        )

    def turn(
        self,
        call_sid: str,
        *,
        speaker: Speaker,
        text: str,
        started_at: dt.datetime,
        ended_at: dt.datetime | None = None,
        latency_ms: float | None = None,
        interrupted: bool = False,
        via: Via = "speech",
        commit_ms: float | None = None,
        parse_ms: float | None = None,
        transition_ms: float | None = None,
        first_audio_ms: float | None = None,
        tts_first_byte_ms: float | None = None,
        tts_source: str | None = None,
        prefetched: bool | None = None,
    ) -> None:
        """Queue :meth:`CallStore.turn` (a caller turn with its latency by stage, when measured)."""
        self._put(
            "turn",
            call_sid,
            lambda: self._store.turn(
                call_sid,
                speaker=speaker,
                text=text,
                started_at=started_at,
                ended_at=ended_at,
                latency_ms=latency_ms,
                interrupted=interrupted,
                via=via,
                commit_ms=commit_ms,
                parse_ms=parse_ms,
                transition_ms=transition_ms,
                first_audio_ms=first_audio_ms,
                tts_first_byte_ms=tts_first_byte_ms,
                tts_source=tts_source,
                prefetched=prefetched,
            ),
        )

    def transition(
        self, call_sid: str, *, source: str, event: str, target: str, at: dt.datetime | None = None
    ) -> None:
        """Queue :meth:`CallStore.transition`; the time defaults to now."""
        when = at or self._clock()
        self._put(
            "transition",
            call_sid,
            lambda: self._store.transition(call_sid, source=source, event=event, target=target, at=when),
        )

    def slot(self, call_sid: str, name: str, value: Any, *, updated_at: dt.datetime | None = None) -> None:
        """Queue :meth:`CallStore.slot` with a snapshot of ``value`` taken now (later mutations unseen)."""
        when = updated_at or self._clock()
        try:
            snapshot = decode_value(encode_value(value))
        except (ValueError, TypeError, RecursionError) as error:  # e.g. a value that contains itself
            self._drop("slot", call_sid, error)
            return
        self._put("slot", call_sid, lambda: self._store.slot(call_sid, name, snapshot, updated_at=when))

    def error(
        self, call_sid: str, *, kind: str, where: str, message: str, at: dt.datetime | None = None
    ) -> None:
        """Queue :meth:`CallStore.error`; the time defaults to now."""
        when = at or self._clock()
        self._put(
            "error",
            call_sid,
            lambda: self._store.error(call_sid, kind=kind, where=where, message=message, at=when),
        )

    def state(self, call_sid: str, current_state: str) -> None:
        """Queue :meth:`CallStore.state`."""
        self._put("state", call_sid, lambda: self._store.state(call_sid, current_state))

    def set_recording(self, call_sid: str, path: str | os.PathLike[str]) -> None:
        """Queue :meth:`CallStore.set_recording`."""
        self._put("set_recording", call_sid, lambda: self._store.set_recording(call_sid, path))

    def call_ended(
        self,
        call_sid: str,
        *,
        outcome: str,
        final_state: str | None = None,
        ended_at: dt.datetime | None = None,
    ) -> None:
        """Queue :meth:`CallStore.call_ended`; the time defaults to now."""
        when = ended_at or self._clock()
        self._put(
            "call_ended",
            call_sid,
            lambda: self._store.call_ended(call_sid, outcome=outcome, final_state=final_state, ended_at=when),
        )

    # -- internals ---------------------------------------------------------------------------------------

    def _put(self, kind: str, call_sid: str, run: Callable[[], Awaitable[object]]) -> None:
        if self._closed:
            self._drop(kind, call_sid, "the record writer is closed")
            return
        try:
            self._queue.put_nowait(_Write(kind, call_sid, run))
        except asyncio.QueueFull:
            self._drop(kind, call_sid, f"{self._max_queue} records are already waiting for the database")
            return
        self._enqueued += 1

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            self._inflight = item
            await self._write(item)
            # Not in a finally: a record cut short by aclose's cancel stays in _inflight, to be counted.
            self._inflight = None
            self._done += 1
            self._wake()

    async def _write(self, item: _Write) -> None:
        attempts = 1 if self._degraded else self._retries + 1
        failure: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._retry_delay_s * 2 ** (attempt - 1))
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await item.run()
            except _PERMANENT as error:
                log.debug("call records: %s for %s refused", item.kind, item.call_sid, exc_info=True)
                self._drop(item.kind, item.call_sid, error)
                return
            except Exception as error:  # the database (or its driver) failed: the call must not
                failure = error
                log.debug(
                    "call records: writing %s for %s failed (attempt %d)",
                    item.kind,
                    item.call_sid,
                    attempt + 1,
                    exc_info=True,
                )
            else:
                self.written += 1
                self._degraded = False
                return
        self._degraded = True
        self._drop(item.kind, item.call_sid, failure)

    def _drop(self, kind: str, call_sid: str, reason: BaseException | str | None) -> None:
        self.dropped += 1
        text = _describe(reason)
        if kind in self._warned:
            log.debug("call records: dropped a %s record for %s: %s", kind, call_sid, text)
            return
        self._warned.add(kind)
        log.warning(
            "call records: a %s record for call %s was not written (%s); the call goes on, and later "
            "%s failures are only counted in RecordWriter.dropped",
            kind,
            call_sid,
            text,
            kind,
        )

    async def _wait_done(self, target: int) -> None:
        if self._done >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    def _wake(self) -> None:
        keep: deque[tuple[int, asyncio.Future[None]]] = deque()
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if self._done >= target:
                waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._waiters = keep


def _describe(reason: BaseException | str | None) -> str:
    """A reason safe for a warning: driver messages can quote the values (numbers, words) they refused."""
    if reason is None:
        return "unknown reason"
    if isinstance(reason, str):
        return reason
    if isinstance(reason, RecordsError):  # our own messages name only sids and field values
        return f"{type(reason).__name__}: {str(reason)[:_REASON_CHARS]}"
    cause = getattr(reason, "orig", None)
    if isinstance(cause, BaseException):
        return f"{type(reason).__name__} from {type(cause).__name__}; details at DEBUG on {__name__}"
    return f"{type(reason).__name__}; details at DEBUG on {__name__}"
