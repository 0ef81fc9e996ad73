"""Flow snapshots in the records database: the latest one per live call, so any worker can resume it.

One row per call (``call_snapshots``), replaced at every transition and deleted when the flow ends.
A write lands only when it is newer than the row (a higher ``generation``, or the same one and a
higher ``seq``), so a stream that has been replaced by a resumed one cannot overwrite it late.
The SQL is portable (no upserts): SQLite and PostgreSQL run the same code. The body is JSON text
that only :mod:`voicefsm.runtime.snapshot` reads; nothing here logs it (it holds slots and the caller).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from voicefsm.records.batch import utcnow
from voicefsm.records.store import CallStore
from voicefsm.records.tables import Base, CallRow, SnapshotRow

CallStatus = Literal["unknown", "live", "ended"]


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """A snapshot row as stored: its body is the JSON :mod:`voicefsm.runtime.snapshot` wrote."""

    call_sid: str
    generation: int
    seq: int
    flow: str
    state: str
    body: str
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    """One change to a call's snapshot row: a newer snapshot, or (``body`` None) the row's deletion.

    A snapshot lands only when it is newer than the row; a deletion removes a row of ``generation``
    or older (a lost stream cannot delete the snapshot of the stream that resumed its call).
    """

    call_sid: str
    generation: int
    seq: int = 0
    flow: str = ""
    state: str = ""
    body: str | None = None
    at: dt.datetime | None = None


_SNAPSHOTS: Table = Base.metadata.tables[SnapshotRow.__tablename__]


class SnapshotStore:
    """The ``call_snapshots`` table of a :class:`~voicefsm.records.CallStore`'s database."""

    def __init__(self, store: CallStore) -> None:
        self._store = store
        self._engine = store.engine
        self._sessions = async_sessionmaker(store.engine, expire_on_commit=False)

    @classmethod
    def of(cls, store: CallStore) -> SnapshotStore:
        """The snapshots kept next to ``store``'s call records (same database, same pool)."""
        return cls(store)

    async def write(self, changes: Sequence[SnapshotWrite]) -> list[bool]:
        """Apply ``changes`` in order in one transaction; for each, whether it changed the row."""
        for attempt in range(2):
            try:
                return await self._store.transaction(lambda connection: _write(connection, changes))
            except IntegrityError:
                # Portable upsert: another writer inserted a row first; compare with it on the retry.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def save(
        self,
        call_sid: str,
        *,
        generation: int,
        seq: int,
        flow: str,
        state: str,
        body: str,
        at: dt.datetime | None = None,
    ) -> bool:
        """Store this snapshot unless the row holds a newer one; True when it was stored."""
        change = SnapshotWrite(call_sid, generation, seq, flow, state, body, at)
        return (await self.write([change]))[0]

    async def delete(self, call_sid: str, *, generation: int | None = None) -> bool:
        """Delete the call's snapshot (only up to ``generation``, when given); False if there was none."""
        newest = generation if generation is not None else 2**31 - 1  # no generation given: any
        return (await self.write([SnapshotWrite(call_sid, newest)]))[0]

    async def load(self, call_sid: str) -> StoredSnapshot | None:
        """The call's snapshot, or None when it has none (never had one, ended, or purged)."""
        async with self._sessions() as session:
            row = await session.get(SnapshotRow, call_sid)
            if row is None:
                return None
            return StoredSnapshot(
                row.call_sid, row.generation, row.seq, row.flow, row.state, row.body, row.updated_at
            )

    async def purge(self, older_than: dt.datetime) -> int:
        """Delete snapshots last written before ``older_than`` (calls that can no longer resume)."""
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(SnapshotRow).where(SnapshotRow.updated_at < older_than))
        return int(result.rowcount)

    async def call_status(self, call_sid: str) -> CallStatus:
        """Whether the call has a record, and whether that record has ended."""
        async with self._sessions() as session:
            ended = (
                await session.execute(select(CallRow.ended_at).where(CallRow.call_sid == call_sid))
            ).one_or_none()
        if ended is None:
            return "unknown"
        return "live" if ended[0] is None else "ended"

    async def reopen_call(self, call_sid: str) -> bool:
        """Clear the end of a call's record (a resumed call goes on); False if it had not ended."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(CallRow)
                .where(CallRow.call_sid == call_sid, CallRow.ended_at.is_not(None))
                .values(ended_at=None, outcome=None, final_state=None)
            )
        return bool(result.rowcount)


_ROW_FIELDS = ("generation", "seq", "flow", "state", "body", "updated_at")
# Built once: a batch's writes are one executemany per kind of change, on statements whose
# compiled form SQLAlchemy caches (a statement built per row costs more than running it).
_INSERT = insert(_SNAPSHOTS)
_UPDATE = (
    update(_SNAPSHOTS)
    .where(_SNAPSHOTS.c.call_sid == bindparam("row_sid"))
    .values({field: bindparam(field) for field in _ROW_FIELDS})
)
_DELETE = delete(_SNAPSHOTS).where(_SNAPSHOTS.c.call_sid == bindparam("row_sid"))


def _write(connection: Connection, changes: Sequence[SnapshotWrite]) -> list[bool]:
    """:meth:`SnapshotStore.write`'s transaction: the rows read once (locked, in order), each change
    worked out in memory in order, then each row's end state written (deletes, updates, inserts)."""
    sids = sorted({change.call_sid for change in changes})
    statement = (
        select(_SNAPSHOTS.c.call_sid, _SNAPSHOTS.c.generation, _SNAPSHOTS.c.seq)
        .where(_SNAPSHOTS.c.call_sid.in_(sids))
        .order_by(_SNAPSHOTS.c.call_sid)
        .with_for_update()
    )
    stored: dict[str, tuple[int, int]] = {sid: (gen, seq) for sid, gen, seq in connection.execute(statement)}
    rows = dict(stored)
    final: dict[str, dict[str, object] | None] = {}  # a row's end state: its values, or None (deleted)
    done: list[bool] = []
    for change in changes:
        current = rows.get(change.call_sid)
        if change.body is None:
            gone = current is not None and current[0] <= change.generation
            if gone:
                del rows[change.call_sid]
                final[change.call_sid] = None
            done.append(gone)
            continue
        if current is not None and (change.generation, change.seq) <= current:
            done.append(False)  # the row holds this snapshot or a later one (a later resume)
            continue
        rows[change.call_sid] = (change.generation, change.seq)
        final[change.call_sid] = {
            "generation": change.generation,
            "seq": change.seq,
            "flow": change.flow,
            "state": change.state,
            "body": change.body,
            "updated_at": change.at or utcnow(),
        }
        done.append(True)
    deletes = [{"row_sid": sid} for sid, values in final.items() if values is None and sid in stored]
    updates = [
        {"row_sid": sid, **values} for sid, values in final.items() if values is not None and sid in stored
    ]
    inserts = [
        {"call_sid": sid, **values}
        for sid, values in final.items()
        if values is not None and sid not in stored
    ]
    for statement_of_kind, parameters in ((_DELETE, deletes), (_UPDATE, updates), (_INSERT, inserts)):
        if parameters:
            connection.execute(statement_of_kind, parameters)
    return done
