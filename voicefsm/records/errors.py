"""Errors raised by the call records: a write that cannot be stored as asked."""

from __future__ import annotations

from collections.abc import Iterable

from voicefsm.errors import VoiceFsmError


class RecordsError(VoiceFsmError):
    """A call record could not be written or read as asked."""


class UnknownCallError(RecordsError):
    """A write named a CallSid that has no call record yet."""

    def __init__(self, call_sid: str, action: str) -> None:
        super().__init__(call_sid, action)
        self.call_sid = call_sid
        self.action = action

    def __str__(self) -> str:
        return (
            f"cannot record {self.action} for call {self.call_sid}: there is no call record with that "
            "CallSid; record call_started(...) for it first"
        )


class InvalidRecordError(RecordsError, ValueError):
    """A field of a record has a value outside the ones it allows."""

    def __init__(self, field: str, value: object, allowed: Iterable[str]) -> None:
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)
        super().__init__(field, value, self.allowed)

    def __str__(self) -> str:
        choices = ", ".join(repr(choice) for choice in self.allowed)
        return f"{self.field}={self.value!r} is not allowed; use one of {choices}"


DB_SETTING = "--db / VOICEFSM_DB_URL"
DB_EXAMPLES = "sqlite:///voicefsm.db or postgresql://user:password@localhost:5432/voicefsm"


class DatabaseUrlError(RecordsError, ValueError):
    """The records database URL cannot be used: not a URL, not SQLite/PostgreSQL, or a sync driver."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{DB_SETTING} is {self.url!r}: {self.reason}; write a URL like {DB_EXAMPLES}"


class SchemaError(RecordsError):
    """The records database's schema is not the one this voicefsm writes, and was not changed."""

    def __init__(self, url: str, reason: str, fix: str) -> None:
        super().__init__(url, reason, fix)
        self.url = url
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        return f"the call records at {self.url} {self.reason}; {self.fix}"
