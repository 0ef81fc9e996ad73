"""A batch of call records applied in one transaction with a handful of statements, not several per record.

The record writer hands the store up to a hundred records at a time: calls starting, their turns,
transitions, slots, errors, their ends. Through the ORM each record cost a ``SELECT`` of its call, a
``SELECT`` of its next sequence number and an ``INSERT`` with a flush of its own: about 1.5 ms of CPU,
most of a call's set-up. A :class:`Batch` reads what it needs once (the calls it touches, locked in
a fixed order, their last sequence numbers, their slots), works every row out in memory in the
records' order, then writes them with one ``executemany`` per table and kind of change.

The records are the store's write methods by name with their keyword arguments (``BatchRecord``), so
a record queued, spooled to disk and replayed later means what the method means.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from voicefsm.records.errors import InvalidRecordError, UnknownCallError
from voicefsm.records.jsonvalue import encode_value
from voicefsm.records.models import DIRECTIONS, SPEAKERS, VIAS
from voicefsm.records.tables import Base

#: One record: the write method's name, the call SID, its keyword arguments.
BatchRecord = tuple[str, str, Mapping[str, Any]]
#: The write methods a batch may apply.
BATCH_KINDS = ("call_started", "turn", "transition", "slot", "error", "state", "set_recording", "call_ended")
#: The outcome a worker guesses for a call it can no longer vouch for; a real end replaces it.
ABANDONED = "abandoned"

_CALLS: Table = Base.metadata.tables["calls"]
_TURNS: Table = Base.metadata.tables["turns"]
_TRANSITIONS: Table = Base.metadata.tables["transitions"]
_SLOTS: Table = Base.metadata.tables["slots"]
_ERRORS: Table = Base.metadata.tables["errors"]
#: The call columns a batch reads to decide (take-overs, first end wins, the final state).
_CALL_STATE = ("ended_at", "outcome", "current_state", "final_state")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC: the one clock every record is stamped with."""
    return dt.datetime.now(dt.UTC)


def _check(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidRecordError(field_name, value, allowed)


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


# -- each kind's arguments, as its write method takes them, checked before anything is written -------


def _call_started(
    *,
    flow: str,
    caller: str | None,
    direction: str = "inbound",
    started_at: dt.datetime | None = None,
) -> dict[str, Any]:
    _check("direction", direction, DIRECTIONS)
    return {"flow": flow, "caller": caller, "direction": direction, "started_at": started_at}


def _turn(
    *,
    speaker: str,
    text: str,
    started_at: dt.datetime,
    ended_at: dt.datetime | None = None,
    latency_ms: float | None = None,
    interrupted: bool = False,
    via: str = "speech",
    commit_ms: float | None = None,
    parse_ms: float | None = None,
    transition_ms: float | None = None,
    first_audio_ms: float | None = None,
    tts_first_byte_ms: float | None = None,
    tts_source: str | None = None,
    prefetched: bool | None = None,
) -> dict[str, Any]:
    _check("speaker", speaker, SPEAKERS)
    _check("via", via, VIAS)
    return {
        "speaker": speaker,
        "text": text,
        "started_at": started_at,
        "ended_at": ended_at,
        "latency_ms": _ms(latency_ms),
        "interrupted": interrupted,
        "via": via,
        "commit_ms": _ms(commit_ms),
        "parse_ms": _ms(parse_ms),
        "transition_ms": _ms(transition_ms),
        "first_audio_ms": _ms(first_audio_ms),
        "tts_first_byte_ms": _ms(tts_first_byte_ms),
        "tts_source": tts_source,
        "prefetched": prefetched,
    }


def _transition(*, source: str, event: str, target: str, at: dt.datetime | None = None) -> dict[str, Any]:
    return {"source": source, "event": event, "target": target, "at": at or utcnow()}


def _slot(name: str, value: Any, *, updated_at: dt.datetime | None = None) -> dict[str, Any]:
    return {"name": name, "value": encode_value(value), "updated_at": updated_at or utcnow()}


def _error(*, kind: str, where: str, message: str, at: dt.datetime | None = None) -> dict[str, Any]:
    return {"kind": kind, "where": where, "message": message, "at": at or utcnow()}


def _state(current_state: str) -> dict[str, Any]:
    return {"current_state": current_state}


def _set_recording(path: str | os.PathLike[str]) -> dict[str, Any]:
    return {"recording_path": os.fspath(path)}


def _call_ended(
    *, outcome: str, final_state: str | None = None, ended_at: dt.datetime | None = None
) -> dict[str, Any]:
    if not outcome:
        raise InvalidRecordError("outcome", outcome, ("a non-empty word such as 'completed'",))
    return {"outcome": outcome, "final_state": final_state, "ended_at": ended_at or utcnow()}


_ARGUMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "call_started": _call_started,
    "turn": _turn,
    "transition": _transition,
    "slot": _slot,
    "error": _error,
    "state": _state,
    "set_recording": _set_recording,
    "call_ended": _call_ended,
}
#: What a record does to a call that is not in the database, in the words of UnknownCallError.
_ACTIONS = {
    "turn": "a turn",
    "transition": "a transition",
    "error": "an error",
    "state": "its state",
    "set_recording": "a recording",
}


@dataclass(slots=True)
class _Call:
    """One call as the batch leaves it: its row's deciding columns, and what the batch changes."""

    state: dict[str, Any]
    #: The whole row when this batch inserts the call; None when it is in the database already.
    new_row: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)

    def set(self, **columns: Any) -> None:
        self.state.update(columns)
        target = self.new_row if self.new_row is not None else self.changes
        target.update(columns)


class Batch:
    """Applies records in order within one transaction of ``connection``; see :meth:`apply`.

    Synchronous, so that a SQLite store runs a whole batch in its writer thread at once, and an async
    store runs it through ``AsyncConnection.run_sync``.

    ``worker`` and ``lease_s``: the store's worker, which takes over (and leases) a call it starts
    again (a resumed call); None when one server runs alone.
    """

    def __init__(self, connection: Connection, *, worker: str | None, lease_s: float) -> None:
        self._connection = connection
        self._worker = worker
        self._lease_s = lease_s
        self._calls: dict[str, _Call] = {}
        self._next_seq: dict[tuple[str, str], int] = {}  # (table, call SID) -> the next seq
        self._slot_rows: dict[tuple[str, str], dict[str, Any]] = {}  # inserted by this batch
        self._slot_updates: dict[tuple[str, str], dict[str, Any]] = {}
        self._slots_known: set[tuple[str, str]] = set()  # in the database before the batch
        self._inserts: dict[str, list[dict[str, Any]]] = {"turns": [], "transitions": [], "errors": []}

    def apply(self, records: Sequence[BatchRecord]) -> list[Any]:
        """Apply ``records``; returns what each write method returns (a bool, a seq, or None).

        Raises InvalidRecordError (or TypeError) for a record that cannot be written, UnknownCallError
        for a record of a call with no record; nothing of the batch is written then.
        """
        prepared = [(kind, call_sid, _prepare(kind, arguments)) for kind, call_sid, arguments in records]
        sids = {call_sid for _, call_sid, _ in prepared}
        self._load_calls(sids)
        started_here = {sid for kind, sid, _ in prepared if kind == "call_started" and sid not in self._calls}
        self._load_seqs(_TURNS, {sid for kind, sid, _ in prepared if kind == "turn" and sid in self._calls})
        self._load_seqs(
            _TRANSITIONS, {sid for kind, sid, _ in prepared if kind == "transition" and sid in self._calls}
        )
        self._load_slots({sid for kind, sid, _ in prepared if kind == "slot"} - started_here)
        results = [self._plan(kind, call_sid, values) for kind, call_sid, values in prepared]
        self._write()
        return results

    # -- reading once ---------------------------------------------------------------------------------

    def _load_calls(self, sids: Iterable[str]) -> None:
        wanted = sorted(sids)
        if not wanted:
            return
        columns = [_CALLS.c.call_sid, *(_CALLS.c[name] for name in _CALL_STATE)]
        # Locked (PostgreSQL; SQLite's writer lock covers it) and in one order, so two workers
        # ending the same call decide one after the other and never deadlock each other.
        statement = (
            select(*columns)
            .where(_CALLS.c.call_sid.in_(wanted))
            .order_by(_CALLS.c.call_sid)
            .with_for_update()
        )
        for row in self._connection.execute(statement):
            self._calls[row.call_sid] = _Call(state={name: row._mapping[name] for name in _CALL_STATE})

    def _load_seqs(self, table: Table, sids: set[str]) -> None:
        for sid in sids:
            self._next_seq[(table.name, sid)] = 1
        if not sids:
            return
        statement = (
            select(table.c.call_sid, func.max(table.c.seq))
            .where(table.c.call_sid.in_(sorted(sids)))
            .group_by(table.c.call_sid)
        )
        for call_sid, last in self._connection.execute(statement):
            self._next_seq[(table.name, call_sid)] = int(last) + 1

    def _load_slots(self, sids: set[str]) -> None:
        if not sids:
            return
        statement = select(_SLOTS.c.call_sid, _SLOTS.c.name).where(_SLOTS.c.call_sid.in_(sorted(sids)))
        self._slots_known = {(call_sid, name) for call_sid, name in self._connection.execute(statement)}

    # -- deciding in memory, in the records' order ----------------------------------------------------

    def _plan(self, kind: str, call_sid: str, values: dict[str, Any]) -> Any:
        if kind == "call_started":
            return self._start(call_sid, values)
        call = self._calls.get(call_sid)
        if kind == "call_ended":
            return call is not None and self._end(call, values)
        if call is None:
            raise UnknownCallError(call_sid, _ACTIONS.get(kind, f"slot {values.get('name')!r}"))
        if kind in ("turn", "transition"):
            table = _TURNS if kind == "turn" else _TRANSITIONS
            seq = self._next_seq.get((table.name, call_sid), 1)
            self._next_seq[(table.name, call_sid)] = seq + 1
            self._inserts[table.name].append({"call_sid": call_sid, "seq": seq, **values})
            if kind == "transition":
                call.set(current_state=values["target"])
            return seq
        if kind == "error":
            self._inserts["errors"].append({"call_sid": call_sid, **values})
        elif kind == "slot":
            key = (call_sid, values["name"])
            row = {"call_sid": call_sid, **values}
            if key in self._slot_rows:
                self._slot_rows[key] = row
            elif key in self._slots_known:
                self._slot_updates[key] = row
            else:
                self._slot_rows[key] = row
        else:  # state, set_recording
            call.set(**values)
        return None

    def _start(self, call_sid: str, values: dict[str, Any]) -> bool:
        now = utcnow()
        lease_until = None if self._worker is None else now + dt.timedelta(seconds=self._lease_s)
        call = self._calls.get(call_sid)
        if call is None:
            row = {
                **dict.fromkeys(_CALL_STATE),
                **values,
                "call_sid": call_sid,
                "started_at": values["started_at"] or now,
                "worker": self._worker,
                "lease_until": lease_until,
                "recording_path": None,
            }
            self._calls[call_sid] = _Call(state=dict.fromkeys(_CALL_STATE), new_row=row)
            return True
        # Started again (a resumed call, or a replayed webhook): this worker now runs and leases it.
        # A call that ended for real stays ended; one only guessed abandoned is live again.
        ended = call.state["ended_at"] is not None
        if self._worker is not None and (not ended or call.state["outcome"] == ABANDONED):
            call.set(worker=self._worker, lease_until=lease_until)
            if call.state["outcome"] == ABANDONED:
                call.set(ended_at=None, outcome=None, final_state=None)
        return False

    @staticmethod
    def _end(call: _Call, values: dict[str, Any]) -> bool:
        """The first end wins (teardown or status callback); a guessed ``abandoned`` gives way."""
        if call.state["ended_at"] is not None and call.state["outcome"] != ABANDONED:
            return False
        final_state = values["final_state"]
        if final_state is not None:
            call.set(current_state=final_state)
        call.set(
            ended_at=values["ended_at"], outcome=values["outcome"], final_state=call.state["current_state"]
        )
        return True

    # -- writing: one statement per table and kind of change ----------------------------------------

    def _write(self) -> None:
        execute = self._connection.execute
        new_calls = [call.new_row for call in self._calls.values() if call.new_row is not None]
        if new_calls:
            execute(insert(_CALLS), new_calls)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for call_sid, call in self._calls.items():
            if call.new_row is None and call.changes:
                columns = tuple(sorted(call.changes))
                by_columns.setdefault(columns, []).append({"key_call_sid": call_sid, **call.changes})
        for columns, rows in by_columns.items():
            statement = (
                update(_CALLS)
                .where(_CALLS.c.call_sid == bindparam("key_call_sid"))
                .values({name: bindparam(name, type_=_CALLS.c[name].type) for name in columns})
            )
            execute(statement, rows)
        for name, rows in self._inserts.items():
            if rows:
                execute(insert(Base.metadata.tables[name]), rows)
        if self._slot_rows:
            execute(insert(_SLOTS), list(self._slot_rows.values()))
        if self._slot_updates:
            statement = (
                update(_SLOTS)
                .where(_SLOTS.c.call_sid == bindparam("key_call_sid"), _SLOTS.c.name == bindparam("key_name"))
                .values(
                    value=bindparam("value", type_=_SLOTS.c.value.type),
                    updated_at=bindparam("updated_at", type_=_SLOTS.c.updated_at.type),
                )
            )
            rows = [
                {
                    "key_call_sid": call_sid,
                    "key_name": name,
                    "value": row["value"],
                    "updated_at": row["updated_at"],
                }
                for (call_sid, name), row in self._slot_updates.items()
            ]
            execute(statement, rows)


def _prepare(kind: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    builder = _ARGUMENTS.get(kind)
    if builder is None:
        raise InvalidRecordError("record kind", kind, BATCH_KINDS)
    return builder(**arguments)
