"""Call records: calls, turns with timings, transitions, slots and errors, written as the call goes.

``CallStore`` is the database (SQLite file by default, PostgreSQL by URL); ``RecordWriter`` is the
non-blocking front the runtime writes through; the pydantic models are what ``/api/calls`` returns.
"""

from voicefsm.records.batch import utcnow
from voicefsm.records.dburl import database_url, masked
from voicefsm.records.errors import (
    DatabaseUrlError,
    InvalidRecordError,
    RecordsError,
    SchemaError,
    UnknownCallError,
)
from voicefsm.records.jsonvalue import decode_value, encode_value
from voicefsm.records.migrate import MigrateMode, SchemaReport
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
    TurnLatencyRecord,
    TurnRecord,
    Via,
)
from voicefsm.records.store import CallStore, StoreUnavailableError, upgrade_database
from voicefsm.records.writer import RecordWriter

__all__ = [
    "DIRECTIONS",
    "OUTCOMES",
    "SPEAKERS",
    "VIAS",
    "CallRecord",
    "CallStore",
    "CallSummary",
    "DatabaseUrlError",
    "Direction",
    "ErrorRecord",
    "InvalidRecordError",
    "MigrateMode",
    "RecordWriter",
    "RecordsError",
    "SchemaError",
    "SchemaReport",
    "Speaker",
    "StoreUnavailableError",
    "TransitionRecord",
    "TurnLatencyRecord",
    "TurnRecord",
    "UnknownCallError",
    "Via",
    "database_url",
    "decode_value",
    "encode_value",
    "masked",
    "upgrade_database",
    "utcnow",
]
