"""Flow snapshots in the records database: the latest one per live call, so any worker can resume it.

One row per call (``call_snapshots``), replaced at every transition and deleted when the flow ends.
A write lands only when it is newer than the row (a higher ``generation``, or the same one and a
higher ``seq``), so a stream that has been replaced by a resumed one cannot overwrite it late.
The SQL is portable (no upserts): SQLite and PostgreSQL run the same code. The body is JSON text
that only :mod:`voicefsm.runtime.snapshot` reads; nothing here logs it (it holds slots and the caller).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from voicefsm.records.store import CallStore, utcnow
from voicefsm.records.tables import CallRow, SnapshotRow

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


class SnapshotStore:
    """The ``call_snapshots`` table of a :class:`~voicefsm.records.CallStore`'s database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def of(cls, store: CallStore) -> SnapshotStore:
        """The snapshots kept next to ``store``'s call records (same database, same pool)."""
        return cls(store.engine)

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
        when = at or utcnow()
        values = {"generation": generation, "seq": seq, "flow": flow, "state": state, "body": body}
        newer = or_(
            SnapshotRow.generation < generation,
            and_(SnapshotRow.generation == generation, SnapshotRow.seq < seq),
        )
        for attempt in range(2):
            try:
                async with self._sessions.begin() as session:
                    result = await session.execute(
                        update(SnapshotRow)
                        .where(SnapshotRow.call_sid == call_sid, newer)
                        .values(updated_at=when, **values)
                    )
                    if result.rowcount:  # type: ignore[attr-defined]
                        return True
                    if await session.get(SnapshotRow, call_sid) is not None:
                        return False  # a newer snapshot is already there
                    session.add(SnapshotRow(call_sid=call_sid, updated_at=when, **values))
                return True
            except IntegrityError:
                # Portable upsert: another writer inserted the row first; compare with it on the retry.
                if attempt:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    async def load(self, call_sid: str) -> StoredSnapshot | None:
        """The call's snapshot, or None when it has none (never had one, ended, or purged)."""
        async with self._sessions() as session:
            row = await session.get(SnapshotRow, call_sid)
            if row is None:
                return None
            return StoredSnapshot(
                row.call_sid, row.generation, row.seq, row.flow, row.state, row.body, row.updated_at
            )

    async def delete(self, call_sid: str, *, generation: int | None = None) -> bool:
        """Delete the call's snapshot (only up to ``generation``, when given); False if there was none."""
        statement = delete(SnapshotRow).where(SnapshotRow.call_sid == call_sid)
        if generation is not None:
            statement = statement.where(SnapshotRow.generation <= generation)
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)

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
