"""Call records: calls, turns with timings, transitions, slots and errors, written as the call goes.

``CallStore`` is the database (SQLite file by default, PostgreSQL by URL); ``RecordWriter`` is the
non-blocking front the runtime writes through; the pydantic models are what ``/api/calls`` returns.
"""

from voicefsm.records.errors import InvalidRecordError, RecordsError, UnknownCallError
from voicefsm.records.jsonvalue import decode_value, encode_value
from voicefsm.records.models import (
    DIRECTIONS,
    OUTCOMES,
    SPEAKERS,
    VIAS,
    CallRecord,
    CallSummary,
    Direction,
    ErrorRecord,
    Speaker,
    TransitionRecord,
    TurnRecord,
    Via,
)
from voicefsm.records.store import CallStore, StoreUnavailableError, utcnow
from voicefsm.records.writer import RecordWriter

__all__ = [
    "DIRECTIONS",
    "OUTCOMES",
    "SPEAKERS",
    "VIAS",
    "CallRecord",
    "CallStore",
    "CallSummary",
    "Direction",
    "ErrorRecord",
    "InvalidRecordError",
    "RecordWriter",
    "RecordsError",
    "Speaker",
    "StoreUnavailableError",
    "TransitionRecord",
    "TurnRecord",
    "UnknownCallError",
    "Via",
    "decode_value",
    "encode_value",
    "utcnow",
]
