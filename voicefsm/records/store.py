"""The call-record store: records are written as the call goes, not at hang-up.

Each write method is its own transaction; the record writer (:mod:`voicefsm.records.writer`) applies
many records of many calls in one through :meth:`CallStore.write_batch` (:mod:`voicefsm.records.batch`).

SQLite by default (a file, WAL with ``synchronous=FULL`` so a committed turn survives a power cut),
PostgreSQL by URL (``postgresql://...``, run on asyncpg); the schema is Alembic's (``migrate.py``).
The SQL is portable: no upserts or pragmas outside the SQLite connect hook, so both dialects run the
same code. Nothing here logs callers or transcripts.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from alembic.util.exc import CommandError as AlembicError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from voicefsm.records.batch import ABANDONED, BATCH_KINDS, Batch, BatchRecord, utcnow
from voicefsm.records.dburl import database_url, masked
from voicefsm.records.errors import (
    DB_EXAMPLES,
    DB_SETTING,
    InvalidRecordError,
    RecordsError,
    SchemaError,
)
from voicefsm.records.jsonvalue import decode_value
from voicefsm.records.migrate import MigrateMode, SchemaReport, prepare_schema
from voicefsm.records.models import (
    CallRecord,
    CallSummary,
    Direction,
    ErrorRecord,
    Speaker,
    TransitionRecord,
    TurnLatencyRecord,
    TurnRecord,
    Via,
)
from voicefsm.records.sqlite_thread import SqliteThread
from voicefsm.records.tables import (
    CallRow,
    ErrorRow,
    SlotRow,
    SnapshotRow,
    StreamTicketRow,
    TransitionRow,
    TurnRow,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds a worker vouches for its calls at each renewal (``VOICEFSM_CALL_LEASE_S``).
DEFAULT_LEASE_S = 30.0
#: Seconds to wait for a PostgreSQL server to accept a connection: a start fails within seconds, not 60.
CONNECT_TIMEOUT_S = 4.0


@dataclass(frozen=True, slots=True)
class TicketUse:
    """What using a stream ticket found: ``admitted`` once, with the signed webhook's caller."""

    admitted: bool
    caller: str | None
    #: The token is another call's (not merely used or expired).
    other_call: bool = False


class StoreUnavailableError(RecordsError):
    """The records database could not be opened (unreachable server, unwritable file, missing driver)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"cannot open the call records at {self.url}: {self.reason}; "
            f"check {DB_SETTING} (e.g. {DB_EXAMPLES})"
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection: WAL lets the API read while a call writes; FULL makes each commit durable
    # across a power loss, not only a crash (research/reliability.md §5).
    cursor = dbapi_connection.cursor()
    try:
        # First: switching a new file to WAL takes a lock, and workers starting together must wait for it.
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _reason(error: BaseException) -> str:
    """The first line of what went wrong, driver errors unwrapped (no SQL, no parameters, no link)."""
    cause: BaseException = error
    while True:
        if isinstance(cause, StatementError) and cause.orig is not None:
            cause = cause.orig
        elif type(cause).__module__.startswith("sqlalchemy.") and cause.__cause__ is not None:
            cause = cause.__cause__  # SQLAlchemy's adapter around asyncpg's own, better-named error
        else:
            break
    if isinstance(cause, TimeoutError):
        return f"the server did not answer within {CONNECT_TIMEOUT_S:g} s (TimeoutError)"
    lines = str(cause).strip().splitlines()
    detail = lines[0] if lines else ""
    return f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename: SQLite parses it, leave it alone
        return None
    return Path(database)


class CallStore:
    """Call records in a SQL database; open with ``await CallStore.open(url)``, close with ``aclose()``."""

    #: What opening did to the schema (None for a store built on an engine directly).
    schema: SchemaReport | None = None
    #: The worker this store records calls for: each call it starts is leased to it (None: no lease).
    worker: str | None = None
    #: How long a call's lease lasts from its start or last renewal, in seconds.
    lease_s: float = DEFAULT_LEASE_S

    def __init__(self, engine: AsyncEngine, *, sqlite_thread: SqliteThread | None = None) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # A SQLite file's batched writes go through a plain connection in a thread (sqlite_thread.py).
        self._sqlite_thread = sqlite_thread

    @classmethod
    async def open(cls, url: str, *, echo: bool = False, migrate: MigrateMode = "auto") -> Self:
        """Connect to ``url`` and bring its schema to this voicefsm's revision as ``migrate`` allows.

        ``url`` is what a user types (``sqlite:///calls.db``, ``postgresql://...``, ``postgres://...``)
        or the explicit async form; see :mod:`voicefsm.records.dburl`. ``migrate`` is ``"auto"``
        (create a new database, upgrade a SQLite file, refuse a PostgreSQL database that is behind),
        ``"check"`` (change nothing) or ``"upgrade"``; see :mod:`voicefsm.records.migrate`. The tables
        are made only by the migrations, never by ``create_all``, so every database has a version.

        Raises DatabaseUrlError for a URL that cannot be used, StoreUnavailableError when the database
        cannot be reached or changed, SchemaError when its schema is not this voicefsm's and was left.
        """
        parsed = database_url(url)
        # Messages name the URL as the user typed it (password masked), so the fixes they show run as is.
        shown = masked(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        file = _sqlite_file(parsed)
        try:
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
            # hide_parameters: a failed INSERT's message must not carry a caller's number or words.
            options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
            if not sqlite:
                options["pool_pre_ping"] = True  # a server restarted mid-call: reconnect, don't fail a turn
                if "timeout" not in parsed.query:
                    options["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
            engine = create_async_engine(parsed, **options)
        except ImportError as error:
            extra = " (pip install 'voicefsm[postgres]')" if error.name == "asyncpg" else ""
            raise StoreUnavailableError(
                shown, f"its driver {error.name or error} is not installed{extra}"
            ) from error
        except (OSError, SQLAlchemyError) as error:
            raise StoreUnavailableError(shown, _reason(error)) from error
        if sqlite:
            sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            report = await prepare_schema(engine, migrate, shown=shown)
        except SchemaError:
            await engine.dispose()
            raise
        except (OSError, TimeoutError, SQLAlchemyError, AlembicError) as error:
            await engine.dispose()
            raise StoreUnavailableError(shown, _reason(error)) from error
        except BaseException:
            await engine.dispose()
            raise
        if report.action != "none" and migrate == "auto":  # otherwise the caller asked, and reports it
            # A schema changed at start is worth a line in the server's log; upgrades above all.
            level = logging.WARNING if report.action == "upgraded" else logging.INFO
            log.log(level, "%s", report.describe(shown))
        thread = SqliteThread(parsed, _sqlite_pragmas) if file is not None else None
        store = cls(engine, sqlite_thread=thread)
        store.schema = report
        return store

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (for health checks and tests)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with any password masked, safe to print."""
        return self._engine.url.render_as_string(hide_password=True)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        if self._sqlite_thread is not None:
            await self._sqlite_thread.aclose()
        await self._engine.dispose()

    async def ping(self) -> None:
        """Round-trip to the database; raises the driver's error when it is unreachable."""
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    # -- writes: one transaction each (or one per batch: write_batch) -------------------------------------

    async def call_started(
        self,
        call_sid: str,
        *,
        flow: str,
        caller: str | None,
        direction: Direction = "inbound",
        started_at: dt.datetime | None = None,
    ) -> bool:
        """Create the call's record; False (and no change) when it already exists, e.g. a replayed webhook.

        A call started again on another worker (a resumed call) is taken over: that worker now runs
        and leases it, and a call only guessed ``abandoned`` is live again.
        """
        arguments = {"flow": flow, "caller": caller, "direction": direction, "started_at": started_at}
        try:
            return bool(await self._write_one("call_started", call_sid, arguments))
        except IntegrityError:
            return False  # a concurrent replay of the same webhook inserted it first

    async def turn(
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
    ) -> int:
        """Append one line to the transcript; returns its sequence number (1, 2, ...).

        A caller turn may carry how long it waited for its answer, by stage (``commit_ms`` ...
        ``prefetched``: see :class:`~voicefsm.records.models.TurnLatencyRecord`).
        """
        arguments = {
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
        }
        return int(await self._write_one("turn", call_sid, arguments))

    async def transition(
        self, call_sid: str, *, source: str, event: str, target: str, at: dt.datetime | None = None
    ) -> int:
        """Append one step to the call's path and make ``target`` its current state; returns its seq."""
        arguments = {"source": source, "event": event, "target": target, "at": at}
        return int(await self._write_one("transition", call_sid, arguments))

    async def slot(
        self, call_sid: str, name: str, value: Any, *, updated_at: dt.datetime | None = None
    ) -> None:
        """Set one slot's value (JSON; dates, enums, pydantic models included), replacing the previous one."""
        arguments = {"name": name, "value": value, "updated_at": updated_at}
        try:
            await self._write_one("slot", call_sid, arguments)
        except IntegrityError:
            # Portable upsert: a concurrent writer inserted the slot first; this time it is an update.
            await self._write_one("slot", call_sid, arguments)

    async def error(
        self, call_sid: str, *, kind: str, where: str, message: str, at: dt.datetime | None = None
    ) -> None:
        """Record an error of the call: its ``kind`` (e.g. ``stt``), ``where`` it happened, the message."""
        await self._write_one("error", call_sid, {"kind": kind, "where": where, "message": message, "at": at})

    async def state(self, call_sid: str, current_state: str) -> None:
        """Set the call's current state (``transition`` does this too)."""
        await self._write_one("state", call_sid, {"current_state": current_state})

    async def set_recording(self, call_sid: str, path: str | os.PathLike[str]) -> None:
        """Point the call's record at its audio recording."""
        await self._write_one("set_recording", call_sid, {"path": path})

    async def call_ended(
        self,
        call_sid: str,
        *,
        outcome: str,
        final_state: str | None = None,
        ended_at: dt.datetime | None = None,
    ) -> bool:
        """Finalise the call; the first end wins (teardown or status callback). False if ended or unknown.

        A call marked ``abandoned`` by a worker that started while it was live (another worker's call
        on a shared database) still gets its real end: the guess gives way to what happened.
        """
        arguments = {"outcome": outcome, "final_state": final_state, "ended_at": ended_at}
        return bool(await self._write_one("call_ended", call_sid, arguments))

    async def write_batch(self, records: Sequence[BatchRecord]) -> list[Any]:
        """Apply ``records`` (``(kind, call_sid, keyword arguments)``) in order, in ONE transaction.

        ``kind`` names a write method above (``call_started``, ``turn``, ``transition``, ``slot``,
        ``error``, ``state``, ``set_recording``, ``call_ended``), called with the call SID and the
        arguments; returns what each would return. Nothing of the batch is kept when one record fails:
        the error is raised, and the caller decides (the writer retries the batch, then writes it record
        by record to find the bad one). See :mod:`voicefsm.records.batch` for how it is written.
        """
        for kind, _, _ in records:
            if kind not in BATCH_KINDS:
                raise InvalidRecordError("record kind", kind, BATCH_KINDS)
        worker, lease_s = self.worker, self.lease_s
        return await self.transaction(
            lambda connection: Batch(connection, worker=worker, lease_s=lease_s).apply(records)
        )

    async def transaction(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` with a synchronous connection, in one transaction (committed unless it raises).

        For a SQLite file it runs in the store's SQLite thread, whole; otherwise through the async
        engine's ``run_sync``. The batched writes (records, snapshots) go this way.
        """
        if self._sqlite_thread is not None:
            return await self._sqlite_thread.run(work)
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def _write_one(self, kind: str, call_sid: str, arguments: Mapping[str, Any]) -> Any:
        return (await self.write_batch([(kind, call_sid, arguments)]))[0]

    def _lease_end(self, now: dt.datetime) -> dt.datetime | None:
        return None if self.worker is None else now + dt.timedelta(seconds=self.lease_s)

    async def recover_abandoned(self, now: dt.datetime | None = None, *, own: bool = True) -> int:
        """:meth:`abandon_calls`, counted."""
        return len(await self.abandon_calls(now, own=own))

    async def abandon_calls(self, now: dt.datetime | None = None, *, own: bool = True) -> list[str]:
        """Mark calls that will not end by themselves ``abandoned`` at ``now``; returns their CallSids.

        Those are the calls whose lease has lapsed (their worker died or lost the database; calls
        recorded before leases have none) and, with ``own`` (at start-up), this store's worker's
        own calls: a worker starting under the same name as a previous run is that run's successor.
        A live worker's calls, renewed by :meth:`renew_leases`, are never touched.
        """
        at = now or utcnow()
        lapsed = CallRow.lease_until.is_(None) | (CallRow.lease_until < at)
        if own and self.worker is not None:
            lapsed = lapsed | (CallRow.worker == self.worker)
        statement = (
            update(CallRow)
            .where(CallRow.ended_at.is_(None), lapsed)
            .values(outcome=ABANDONED, ended_at=at, final_state=CallRow.current_state)
            .returning(CallRow.call_sid)
        )
        async with self._engine.begin() as connection:
            marked = list((await connection.execute(statement)).scalars())
            # Tickets nobody used in time: they can never be used now.
            await connection.execute(delete(StreamTicketRow).where(StreamTicketRow.expires_at < at))
        return sorted(marked)

    async def renew_leases(self, call_sids: Collection[str], now: dt.datetime | None = None) -> int:
        """Extend this worker's lease on its live ``call_sids`` by ``lease_s``; returns how many were renewed.

        A live call another worker guessed ``abandoned`` (this one could not renew in time) is live
        again: the guess gives way to the call.
        """
        if self.worker is None or not call_sids:
            return 0
        at = now or utcnow()
        mine = (CallRow.worker == self.worker) & CallRow.call_sid.in_(list(call_sids))
        async with self._engine.begin() as connection:
            renewed = await connection.execute(
                update(CallRow)
                .where(mine, CallRow.ended_at.is_(None))
                .values(lease_until=self._lease_end(at))
            )
            revived = await connection.execute(
                update(CallRow)
                .where(mine, CallRow.outcome == ABANDONED)
                .values(lease_until=self._lease_end(at), ended_at=None, outcome=None, final_state=None)
            )
        return renewed.rowcount + revived.rowcount

    # -- stream tickets: minted by the voice webhook, used once by the stream on any worker ----------

    async def add_ticket(
        self, call_sid: str, token_hash: str, *, caller: str | None, expires_at: dt.datetime
    ) -> None:
        """Keep a new stream ticket (only its token's hash) until ``expires_at``."""
        async with self._sessions.begin() as session:
            session.add(
                StreamTicketRow(
                    token_hash=token_hash,
                    call_sid=call_sid,
                    caller=caller,
                    expires_at=expires_at,
                    issued_by=self.worker,
                )
            )

    async def use_ticket(
        self, call_sid: str, token_hash: str, *, now: dt.datetime | None = None
    ) -> TicketUse:
        """Use ``call_sid``'s ticket ``token_hash`` once, atomically across workers; its other tickets go too.

        Exactly one of several workers (or replays) using the same ticket gets ``admitted``.
        """
        at = now or utcnow()
        async with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # One claim per call at a time (it touches all the call's tickets, which two claims of
                # different tickets would otherwise lock in opposite orders). SQLite: the UPDATE below,
                # the first statement, takes the database's write lock.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:sid))"), {"sid": call_sid}
                )
            claimed = await connection.execute(
                update(StreamTicketRow)
                .where(
                    StreamTicketRow.token_hash == token_hash,
                    StreamTicketRow.call_sid == call_sid,
                    StreamTicketRow.used_at.is_(None),
                    StreamTicketRow.expires_at > at,
                )
                .values(used_at=at, used_by=self.worker or "-")
            )
            if claimed.rowcount != 1:
                owner = await connection.scalar(
                    select(StreamTicketRow.call_sid).where(StreamTicketRow.token_hash == token_hash)
                )
                return TicketUse(False, None, other_call=owner is not None and owner != call_sid)
            caller = await connection.scalar(
                select(StreamTicketRow.caller).where(StreamTicketRow.token_hash == token_hash)
            )
            # A retried webhook's other ticket for this call may not open a second stream.
            await connection.execute(
                update(StreamTicketRow)
                .where(StreamTicketRow.call_sid == call_sid, StreamTicketRow.used_at.is_(None))
                .values(used_at=at, used_by=self.worker or "-")
            )
        return TicketUse(True, caller)

    async def call_sid_taken(self, call_sid: str, *, now: dt.datetime | None = None) -> bool:
        """True when ``call_sid`` has a record or a ticket still waiting for its stream."""
        async with self._sessions() as session:
            if await session.get(CallRow, call_sid) is not None:
                return True
        return await self.has_waiting_ticket(call_sid, now=now)

    async def waiting_tickets(self, *, now: dt.datetime | None = None) -> int:
        """Calls this store's worker answered whose stream has not started yet (unused, unexpired tickets)."""
        waiting = _unused_tickets(now or utcnow())
        if self.worker is not None:
            waiting = waiting & (StreamTicketRow.issued_by == self.worker)
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count(func.distinct(StreamTicketRow.call_sid))).where(waiting)
            )
        return int(count or 0)

    async def has_waiting_ticket(self, call_sid: str, *, now: dt.datetime | None = None) -> bool:
        """True when ``call_sid`` was answered (by any worker) and its stream has not started yet."""
        waiting = _unused_tickets(now or utcnow()) & (StreamTicketRow.call_sid == call_sid)
        async with self._sessions() as session:
            count = await session.scalar(select(func.count()).select_from(StreamTicketRow).where(waiting))
        return bool(count)

    async def withdraw_tickets(
        self, call_sid: str, *, now: dt.datetime | None = None
    ) -> tuple[bool, str | None]:
        """Void ``call_sid``'s unused tickets (its call ended before its stream): (any waited, caller)."""
        at = now or utcnow()
        waiting = _unused_tickets(at) & (StreamTicketRow.call_sid == call_sid)
        async with self._sessions.begin() as session:
            callers = (await session.scalars(select(StreamTicketRow.caller).where(waiting))).all()
            if not callers:
                return False, None
            await session.execute(
                update(StreamTicketRow).where(waiting).values(used_at=at, used_by="withdrawn")
            )
        return True, next((caller for caller in callers if caller), None)

    async def delete_call(self, call_sid: str) -> bool:
        """Delete a call and everything recorded for it (retention, erasure requests); False if unknown."""
        async with self._sessions.begin() as session:
            for child in (TurnRow, TransitionRow, SlotRow, ErrorRow, SnapshotRow):  # snapshot: slots, caller
                await session.execute(delete(child).where(child.call_sid == call_sid))
            # Its stream tickets hold the caller's number too.
            await session.execute(delete(StreamTicketRow).where(StreamTicketRow.call_sid == call_sid))
            result = await session.execute(delete(CallRow).where(CallRow.call_sid == call_sid))
        return bool(getattr(result, "rowcount", 0))

    # -- reads ----------------------------------------------------------------------------------------

    async def list_calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        """The calls, newest first."""
        turn_count = (
            select(func.count(TurnRow.id))
            .where(TurnRow.call_sid == CallRow.call_sid)
            .correlate(CallRow)
            .scalar_subquery()
        )
        statement = (
            select(CallRow, turn_count)
            .order_by(CallRow.started_at.desc(), CallRow.call_sid.desc())
            .limit(max(0, limit))
            .offset(max(0, offset))
        )
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        return [CallSummary(**_summary(call, count)) for call, count in rows]

    async def get_call(self, call_sid: str) -> CallRecord | None:
        """The whole record of one call, or None when there is none."""
        async with self._sessions() as session:
            call = await session.get(CallRow, call_sid)
            if call is None:
                return None
            turns = (
                await session.scalars(
                    select(TurnRow).where(TurnRow.call_sid == call_sid).order_by(TurnRow.seq, TurnRow.id)
                )
            ).all()
            steps = (
                await session.scalars(
                    select(TransitionRow)
                    .where(TransitionRow.call_sid == call_sid)
                    .order_by(TransitionRow.seq, TransitionRow.id)
                )
            ).all()
            slots = (
                await session.scalars(
                    select(SlotRow)
                    .where(SlotRow.call_sid == call_sid)
                    .order_by(SlotRow.updated_at, SlotRow.name)
                )
            ).all()
            errors = (
                await session.scalars(
                    select(ErrorRow).where(ErrorRow.call_sid == call_sid).order_by(ErrorRow.at, ErrorRow.id)
                )
            ).all()
        return CallRecord(
            **_summary(call, len(turns)),
            transcript=[
                TurnRecord(
                    seq=t.seq,
                    speaker=t.speaker,  # type: ignore[arg-type]  # checked on write
                    text=t.text,
                    started_at=t.started_at,
                    ended_at=t.ended_at,
                    latency_ms=t.latency_ms,
                    interrupted=t.interrupted,
                    via=t.via,  # type: ignore[arg-type]  # checked on write
                    breakdown=_breakdown(t),
                )
                for t in turns
            ],
            path=[
                TransitionRecord(seq=s.seq, source=s.source, event=s.event, target=s.target, at=s.at)
                for s in steps
            ],
            slots={slot.name: decode_value(slot.value) for slot in slots},
            errors=[ErrorRecord(at=e.at, kind=e.kind, where=e.where, message=e.message) for e in errors],
        )


def _unused_tickets(at: dt.datetime) -> ColumnElement[bool]:
    """Stream tickets neither used nor expired at ``at``."""
    return StreamTicketRow.used_at.is_(None) & (StreamTicketRow.expires_at > at)


def _breakdown(turn: TurnRow) -> TurnLatencyRecord | None:
    """A caller turn's latency by stage, when it was measured."""
    if turn.commit_ms is None:
        return None
    return TurnLatencyRecord(
        commit_ms=turn.commit_ms,
        parse_ms=turn.parse_ms,
        transition_ms=turn.transition_ms,
        first_audio_ms=turn.first_audio_ms,
        tts_first_byte_ms=turn.tts_first_byte_ms,
        tts_source=turn.tts_source,
        prefetched=turn.prefetched,
    )


def _summary(call: CallRow, turn_count: int) -> dict[str, Any]:
    ended = call.ended_at
    return {
        "call_sid": call.call_sid,
        "flow": call.flow,
        "direction": call.direction,
        "caller": call.caller,
        "started_at": call.started_at,
        "ended_at": ended,
        "duration_s": None if ended is None else (ended - call.started_at).total_seconds(),
        "outcome": call.outcome,
        "current_state": call.current_state,
        "final_state": call.final_state,
        "recording_path": call.recording_path,
        "turn_count": turn_count,
        "worker": call.worker,
    }


async def upgrade_database(url: str) -> SchemaReport:
    """Create or upgrade the records' schema at ``url`` to this voicefsm's newest revision."""
    store = await CallStore.open(url, migrate="upgrade")
    await store.aclose()
    assert store.schema is not None  # open() always sets it
    return store.schema
