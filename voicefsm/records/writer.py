"""A non-blocking front for the call's hot path: records are queued now and written in batches by one task.

The runtime calls plain methods (``writer.turn(...)``) that never await and never raise; one
writer task owned by the ``RecordWriter`` takes what the queue holds (up to ``batch_size``
records) and writes it in order through :meth:`CallStore.write_batch`, one transaction per batch.
The task lets a batch gather for ``linger_s`` after its first record (unless someone flushes): a
transaction costs about as much CPU for one record as for fifty, and records are off the call's path.

Records are never dropped silently. When the database fails, the call goes on:

1. the batch is retried with exponential backoff (``retries`` times, from ``retry_delay_s``);
2. if the database still fails, the batch goes to the on-disk spool (:mod:`voicefsm.records.spool`,
   JSON lines in ``spool_dir``), and so does every later record while the spool holds any: order is kept;
3. the writer asks the database again (from ``probe_delay_s``, doubling up to ``probe_max_s``) and,
   when it answers, replays the spool in order, then writes from the queue again. Records a crashed or
   stopped run left in the spool are replayed when the next writer starts.

A record is lost only when it cannot be kept even there (no spool configured, spool full, disk full)
or when the database refuses the record itself (a turn for an unknown call): it is counted in
``lost``, with one warning per kind of record (no phone numbers or transcripts in it).

The sync methods must be called on the event loop's thread (marshal SDK callbacks with
``loop.call_soon_threadsafe`` first).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from voicefsm.records.batch import utcnow
from voicefsm.records.errors import RecordsError
from voicefsm.records.jsonvalue import decode_value, encode_value
from voicefsm.records.linger import Linger
from voicefsm.records.models import Direction, Speaker, Via
from voicefsm.records.spool import RecordSpool, SpooledRecord, SpoolFullError
from voicefsm.records.store import CallStore

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_BATCH_SIZE = 100
#: Seconds a batch may gather records after its first one: calls starting together share a transaction
#: (a call's end cuts the wait short).
DEFAULT_LINGER_S = 0.25
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY_S = 0.1
DEFAULT_PROBE_DELAY_S = 0.5
DEFAULT_PROBE_MAX_S = 5.0
DEFAULT_WRITE_TIMEOUT_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 5.0
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
_REASON_CHARS = 200
# Not worth retrying: the record itself is wrong (unknown call, bad field), not the database.
_PERMANENT = (RecordsError, ValueError, TypeError)
_T = TypeVar("_T")


class RecordWriter:
    """Queues call records without blocking and writes them, in order and in batches, through one task."""

    def __init__(
        self,
        store: CallStore,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger_s: float = DEFAULT_LINGER_S,
        retries: int = DEFAULT_RETRIES,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
        probe_delay_s: float = DEFAULT_PROBE_DELAY_S,
        probe_max_s: float = DEFAULT_PROBE_MAX_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"RecordWriter batch_size must be 1 or more, not {batch_size}")
        self._store = store
        self._spool = (
            RecordSpool(Path(spool_dir), max_bytes=spool_max_bytes) if spool_dir is not None else None
        )
        self._spool_lock = threading.Lock()  # the spool's file I/O runs in threads, one at a time
        self._spool_opened = False
        self._queue: deque[SpooledRecord] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._linger = Linger(linger_s)
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._probe_delay_s = probe_delay_s
        self._probe_max_s = probe_max_s
        self._write_timeout_s = write_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._down = False  # the last write failed: records go to the spool until the database answers
        self._inflight: list[SpooledRecord] = []
        self._handed_to_spool: asyncio.Future[int] | None = None
        self._enqueued = 0
        self._done = 0  # records that left memory: written, spooled or lost
        self._changed = asyncio.Event()
        self._waiting = 0
        self._warned: set[str] = set()
        #: Records written to the database (replayed ones included).
        self.written = 0
        #: Records written again after a failed attempt (a batch of 10 retried twice counts 20).
        self.retried = 0
        #: Records put in the spool while the database was down.
        self.spooled = 0
        #: Records written from the spool to the database.
        self.replayed = 0
        #: Records lost: not kept even in the spool (none, full, disk full) or refused by the database.
        self.lost = 0

    @property
    def dropped(self) -> int:
        """Records lost (the older name of :attr:`lost`)."""
        return self.lost

    @property
    def pending(self) -> int:
        """Records in memory (queued or being written), not yet written, spooled or lost: the queue depth."""
        return self._enqueued - self._done

    @property
    def spool_depth(self) -> int:
        """Records in the spool waiting for the database."""
        return self._spool.depth if self._spool is not None else 0

    @property
    def started(self) -> bool:
        """The writer task has been started (records queued now will be written)."""
        return self._task is not None

    @property
    def database_down(self) -> bool:
        """The last write (or replay) failed and the database has not answered since (for /readyz)."""
        return self._down

    @property
    def spool_dir(self) -> Path | None:
        """The spool's folder (None: no spool, records the database refuses after retries are lost)."""
        return self._spool.directory if self._spool is not None else None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (on the running loop); the spool, then records queued before it, go first."""
        if self._closed:
            raise RuntimeError("RecordWriter.start() after aclose(): make a new RecordWriter")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voicefsm-record-writer")

    def flush(self) -> Coroutine[Any, Any, None]:
        """Wait until every record queued before this call left memory (written, spooled or lost).

        The mark is taken when ``flush()`` is called, so a flush wrapped in a task still waits only
        for the records queued before it. See :meth:`settle` to wait for the spool too.
        """
        target = self._enqueued
        if self._done < target and self._task is None and not self._closed:
            raise RuntimeError("RecordWriter.flush() before start(): nothing would write the queued records")
        return self._wait(lambda: self._done >= target)

    def settle(self) -> Coroutine[Any, Any, None]:
        """Wait until every record queued before this call is in the database (or lost) and the spool is
        empty: after an outage, this returns once the database answered and everything was replayed.
        """
        target = self._enqueued
        if self._task is None and not self._closed and (self._done < target or self.spool_depth):
            raise RuntimeError("RecordWriter.settle() before start(): nothing would write the records")
        return self._wait(lambda: self._done >= target and (self.spool_depth == 0 or self._closed))

    async def aclose(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting records, write what is queued for up to ``drain_timeout_s``, stop the writer task.

        Records still in memory then go to the spool, for the next start to replay (lost and counted
        only without one). A spool the database could not take stays on disk for the next start. The
        store is left open.
        """
        if self._closed:
            return
        self._closed = True
        self._linger.stop()  # what is queued goes now
        self._notify()
        task, self._task = self._task, None
        if task is not None:
            deadline = self._drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            try:
                async with asyncio.timeout(deadline):
                    await self._wait_until(
                        lambda: self._done >= self._enqueued and (self._down or self.spool_depth == 0)
                    )
            except TimeoutError:
                pass
            task.cancel()
            await asyncio.wait({task})
        left = list(self._inflight) + list(self._queue)
        handed, self._handed_to_spool = self._handed_to_spool, None
        if handed is not None and self._inflight:
            # The in-flight batch was being written to the spool when the task stopped: that write counts.
            await asyncio.wait({handed})
            kept = not handed.cancelled() and handed.exception() is None
            left = list(self._queue)
            if kept:
                self.spooled += len(self._inflight)
            else:
                self._lose_all(self._inflight, "the records spool refused them at shutdown")
        self._inflight = []
        self._queue.clear()
        if left:
            if self._spool is not None:
                await self._to_spool(left, None, shutting_down=True)
            else:
                self._lose_all(left, "the writer stopped before the database took them")
        self._done = self._enqueued
        if self._spool is not None and self._spool_opened:
            if self._spool.depth:
                log.warning(
                    "call records: %d records stay in the spool %s, replayed at the next start",
                    self._spool.depth,
                    self._spool.directory,
                )
            await self._in_thread(self._spool.close)
        self._notify()
        if self.lost:
            log.warning("call records: %d records in all were lost (RecordWriter.lost)", self.lost)

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
            {"flow": flow, "caller": caller, "direction": direction, "started_at": at},
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
            {
                "speaker": speaker,
                "text": text,
                "started_at": started_at,
                "ended_at": ended_at,
                "latency_ms": latency_ms,
                "interrupted": interrupted,
                "via": via,
                "commit_ms": commit_ms,
                "parse_ms": parse_ms,
                "transition_ms": transition_ms,
                "first_audio_ms": first_audio_ms,
                "tts_first_byte_ms": tts_first_byte_ms,
                "tts_source": tts_source,
                "prefetched": prefetched,
            },
        )

    def transition(
        self, call_sid: str, *, source: str, event: str, target: str, at: dt.datetime | None = None
    ) -> None:
        """Queue :meth:`CallStore.transition`; the time defaults to now."""
        when = at or self._clock()
        self._put("transition", call_sid, {"source": source, "event": event, "target": target, "at": when})

    def slot(self, call_sid: str, name: str, value: Any, *, updated_at: dt.datetime | None = None) -> None:
        """Queue :meth:`CallStore.slot` with a snapshot of ``value`` taken now (later mutations unseen)."""
        when = updated_at or self._clock()
        try:
            snapshot = decode_value(encode_value(value))
        except (ValueError, TypeError, RecursionError) as error:  # e.g. a value that contains itself
            self._lose("slot", call_sid, error)
            return
        self._put("slot", call_sid, {"name": name, "value": snapshot, "updated_at": when})

    def error(
        self, call_sid: str, *, kind: str, where: str, message: str, at: dt.datetime | None = None
    ) -> None:
        """Queue :meth:`CallStore.error`; the time defaults to now."""
        when = at or self._clock()
        self._put("error", call_sid, {"kind": kind, "where": where, "message": message, "at": when})

    def state(self, call_sid: str, current_state: str) -> None:
        """Queue :meth:`CallStore.state`."""
        self._put("state", call_sid, {"current_state": current_state})

    def set_recording(self, call_sid: str, path: str | os.PathLike[str]) -> None:
        """Queue :meth:`CallStore.set_recording`."""
        self._put("set_recording", call_sid, {"path": os.fspath(path)})

    def call_ended(
        self,
        call_sid: str,
        *,
        outcome: str,
        final_state: str | None = None,
        ended_at: dt.datetime | None = None,
    ) -> None:
        """Queue :meth:`CallStore.call_ended`; the time defaults to now. Written without lingering: an
        ended call's record is what its page, the API and a resuming worker look for next."""
        when = ended_at or self._clock()
        self._put("call_ended", call_sid, {"outcome": outcome, "final_state": final_state, "ended_at": when})
        self.write_soon()

    def write_soon(self) -> None:
        """Write what is queued without letting the batch gather (no waiting: see :meth:`flush`)."""
        self._linger.cut_short()

    # -- internals ---------------------------------------------------------------------------------------

    def _put(self, kind: str, call_sid: str, arguments: dict[str, Any]) -> None:
        if self._closed:
            self._lose(kind, call_sid, "the record writer is closed")
            return
        if len(self._queue) >= self._max_queue:
            self._lose(kind, call_sid, f"{self._max_queue} records are already waiting for the database")
            return
        self._queue.append((kind, call_sid, arguments))
        self._enqueued += 1
        self._notify()

    async def _run(self) -> None:
        if self._spool is not None:
            await self._open_spool()
        delay = self._probe_delay_s
        while True:
            try:
                delay = await self._step(delay)
            except Exception as error:  # a bug here must not stop every later record being written
                log.exception("call records: the record writer failed; it goes on with the next records")
                inflight, self._inflight = self._inflight, []
                self._lose_all(inflight, error)
                self._left_memory(len(inflight))
                await asyncio.sleep(self._probe_delay_s)

    async def _step(self, delay: float) -> float:
        """One round of the writer: replay the spool, or write (or spool) a batch; returns the probe delay."""
        if self.spool_depth:
            # Records wait on disk: what is queued goes behind them, so every call's order holds.
            while self._queue:
                await self._to_spool(self._take(), None)
            if await self._replay():
                return self._probe_delay_s
            await self._wait_for_records(delay)
            return min(delay * 2, self._probe_max_s)
        if not self._queue:
            await self._wait_until(lambda: bool(self._queue))
        await self._linger.pause(full=len(self._queue) >= self._batch_size)
        await self._write(self._take())
        return delay

    def _take(self) -> list[SpooledRecord]:
        count = min(self._batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self._inflight = batch
        return batch

    def _left_memory(self, count: int) -> None:
        self._inflight = []
        self._done += count
        self._notify()

    async def _write(self, batch: list[SpooledRecord]) -> None:
        failure: BaseException | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                if len(self._queue) * 2 >= self._max_queue:
                    break  # records pile up behind a stalled database: keep them on disk now, not later
                await asyncio.sleep(self._retry_delay_s * 2 ** (attempt - 1))
                self.retried += len(batch)
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await self._store.write_batch(batch)
            except _PERMANENT:
                log.debug("call records: a batch of %d was refused; writing it one by one", len(batch))
                await self._one_by_one(batch)
                return
            except Exception as error:  # the database (or its driver) failed: the call must not
                failure = error
                log.debug(
                    "call records: writing %d records failed (attempt %d)",
                    len(batch),
                    attempt + 1,
                    exc_info=True,
                )
            else:
                self.written += len(batch)
                self._up()
                self._left_memory(len(batch))
                return
        await self._to_spool(batch, failure)

    async def _one_by_one(self, batch: list[SpooledRecord]) -> None:
        """A batch with a bad record: write each alone, so only the bad one is lost."""
        for index, record in enumerate(batch):
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await self._store.write_batch([record])
            except _PERMANENT as error:
                log.debug("call records: %s for %s refused", record[0], record[1], exc_info=True)
                self._lose(record[0], record[1], error)
            except Exception as error:
                await self._to_spool(batch[index:], error, done=index)
                return
            else:
                self.written += 1
        self._left_memory(len(batch))

    async def _to_spool(
        self,
        records: list[SpooledRecord],
        failure: BaseException | None,
        *,
        done: int = 0,
        shutting_down: bool = False,
    ) -> None:
        """Keep ``records`` in the spool (or count them lost); ``done`` more of the batch were written."""
        if failure is not None:
            self._went_down(failure)
        spool = self._spool
        if spool is None:
            self._lose_all(records, f"the database failed ({_describe(failure)}) and no spool is set")
        else:
            try:
                if not self._spool_opened:
                    await self._open_spool()
                operation = asyncio.ensure_future(self._in_thread(spool.append, records))
                if not shutting_down:
                    self._inflight = list(records)  # what aclose counts if it stops the task meanwhile
                    self._handed_to_spool = operation
                await asyncio.shield(operation)
            except (SpoolFullError, OSError) as error:
                self._handed_to_spool = None
                self._lose_all(records, _describe(error))
            else:
                self._handed_to_spool = None
                self.spooled += len(records)
        if not shutting_down:
            self._left_memory(done + len(records))

    async def _replay(self) -> bool:
        """Write the spool's oldest batch; False when the database still fails."""
        spool = self._spool
        assert spool is not None
        unreadable = spool.unreadable
        records, offset = await self._in_thread(spool.peek, self._batch_size)
        if spool.unreadable > unreadable:
            self._lose_all([("spooled", "?", {})] * (spool.unreadable - unreadable), "unreadable spool line")
        if not records:
            return True
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._store.write_batch(records)
        except _PERMANENT:
            # One bad record in the batch: write the others, count it; a failure now leaves the rest.
            written = 0
            for record in records:
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._store.write_batch([record])
                except _PERMANENT as error:
                    self._lose(record[0], record[1], error)
                except Exception as error:
                    self._went_down(error)
                    return False
                else:
                    written += 1
            self.written += written
            self.replayed += written
        except Exception as error:
            self._went_down(error)
            return False
        else:
            self.written += len(records)
            self.replayed += len(records)
        await self._in_thread(spool.consumed, len(records), offset)
        self._up()
        if not spool.depth:
            log.warning(
                "call records: the database answers again; %d spooled records replayed in all",
                self.replayed,
            )
        self._notify()
        return True

    async def _open_spool(self) -> None:
        spool = self._spool
        assert spool is not None
        self._spool_opened = True
        try:
            found = await self._in_thread(spool.open)
        except OSError as error:
            log.warning(
                "call records: cannot open the records spool %s (%s): records the database refuses "
                "will be lost; make the folder writable or set VOICEFSM_RECORDS_SPOOL_DIR",
                spool.directory,
                _describe(error),
            )
            self._spool = None
            return
        if found:
            log.warning(
                "call records: %d records left in the spool %s by an earlier run; replaying them first",
                found,
                spool.directory,
            )

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        def locked() -> _T:
            with self._spool_lock:
                return function(*args)

        return await asyncio.to_thread(locked)

    def _went_down(self, failure: BaseException) -> None:
        if self._down:
            return
        self._down = True
        where = (
            f"keeping records in the spool {self._spool.directory} until it answers"
            if self._spool is not None
            else "records it refuses are lost (no spool: set VOICEFSM_RECORDS_SPOOL_DIR)"
        )
        log.warning(
            "call records: the database is not answering (%s); the calls go on, %s",
            _describe(failure),
            where,
        )

    def _up(self) -> None:
        self._down = False

    def _lose_all(self, records: Sequence[SpooledRecord], reason: BaseException | str | None) -> None:
        for kind, call_sid, _ in records:
            self._lose(kind, call_sid, reason)

    def _lose(self, kind: str, call_sid: str, reason: BaseException | str | None) -> None:
        self.lost += 1
        text = _describe(reason)
        if kind in self._warned:
            log.debug("call records: lost a %s record for %s: %s", kind, call_sid, text)
            return
        self._warned.add(kind)
        log.warning(
            "call records: a %s record for call %s was lost (%s); the call goes on, and later "
            "lost %s records are only counted (voicefsm_records_lost in /metrics)",
            kind,
            call_sid,
            text,
            kind,
        )

    async def _wait_for_records(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._wait_until(lambda: bool(self._queue))
        except TimeoutError:
            pass

    def _wait(self, condition: Callable[[], bool]) -> Coroutine[Any, Any, None]:
        return self._hurried(condition)

    async def _hurried(self, condition: Callable[[], bool]) -> None:
        with self._linger.hurried():  # someone waits for these records: no lingering meanwhile
            await self._wait_until(condition)

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            changed = self._changed
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1

    def _notify(self) -> None:
        if self._waiting:  # nobody waits: nothing to wake (the hot path's usual case costs a comparison)
            self._changed.set()
            self._changed = asyncio.Event()


def _describe(reason: BaseException | str | None) -> str:
    """A reason safe for a warning: driver messages can quote the values (numbers, words) they refused."""
    if reason is None:
        return "unknown reason"
    if isinstance(reason, str):
        return reason
    if isinstance(reason, SpoolFullError):
        return str(reason)
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    if isinstance(reason, RecordsError):  # our own messages name only sids and field values
        return f"{type(reason).__name__}: {str(reason)[:_REASON_CHARS]}"
    cause = getattr(reason, "orig", None)
    if isinstance(cause, BaseException):
        return f"{type(reason).__name__} from {type(cause).__name__}; details at DEBUG on {__name__}"
    return f"{type(reason).__name__}; details at DEBUG on {__name__}"
