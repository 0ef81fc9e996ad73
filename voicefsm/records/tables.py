"""The call-record tables (SQLAlchemy 2 ORM); plain column types, so SQLite and PostgreSQL share them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SID_LENGTH = 128
NAME_LENGTH = 255

#: Constraint names as PostgreSQL chooses them by default, so tables made before there were migrations
#: (by ``create_all``) carry the same names as tables made by the migrations, and SQLite's get names
#: that a later batch migration can refer to.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "pk": "%(table_name)s_pkey",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Datetimes stored as UTC and read back timezone-aware, whatever the dialect keeps of the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        # A naive datetime is taken as UTC: the runtime's clock is UTC.
        utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        # SQLite's DATETIME text has no zone; store naive UTC so every row compares and sorts alike.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the call-record tables; their schema changes only by a migration."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CallRow(Base):
    """One phone call, keyed by Twilio's CallSid."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), primary_key=True)
    flow: Mapped[str] = mapped_column(String(NAME_LENGTH))
    direction: Mapped[str] = mapped_column(String(16))
    # E.164 as Twilio sent it: personal data, kept in this one column and never logged.
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    final_state: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    current_state: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    recording_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # scale/workers (revision 0002): the worker running the call, and until when it vouches for it.
    worker: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)


class TurnRow(Base):
    """One utterance: the agent's prompt or the caller's final transcript (or keypad digits)."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_call_seq", "call_sid", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), ForeignKey("calls.call_sid"))
    seq: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    via: Mapped[str] = mapped_column(String(16))
    # ahead (issue 17): how long a caller turn waited for its answer, by stage, in milliseconds
    # (end of speech or last key -> committed -> parsed -> transition done -> first audio frame sent).
    commit_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parse_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transition_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    first_audio_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tts_first_byte_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Where the answer's audio came from: memory or disk (the prompt cache), or provider.
    tts_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    prefetched: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class TransitionRow(Base):
    """One step of the statechart: ``source --event--> target``."""

    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_call_seq", "call_sid", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), ForeignKey("calls.call_sid"))
    seq: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(NAME_LENGTH))
    event: Mapped[str] = mapped_column(String(NAME_LENGTH))
    target: Mapped[str] = mapped_column(String(NAME_LENGTH))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class SlotRow(Base):
    """The latest value of one slot of one call, as JSON text."""

    __tablename__ = "slots"

    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), ForeignKey("calls.call_sid"), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ErrorRow(Base):
    """Something that went wrong during a call: ``kind`` (e.g. ``stt``), ``where`` (state or component)."""

    __tablename__ = "errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), ForeignKey("calls.call_sid"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    where: Mapped[str] = mapped_column(String(NAME_LENGTH))
    message: Mapped[str] = mapped_column(Text)


class StreamTicketRow(Base):
    """A single-use ticket the voice webhook minted for a call's media stream (revision 0002).

    Kept in the database so that any worker can admit the stream; only a hash of the token is stored.
    """

    __tablename__ = "stream_tickets"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), index=True)
    # The signed webhook's From: personal data, as in calls.caller; the row goes when the ticket expires.
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    # The worker whose webhook minted it: an answered call waiting for its stream holds one of its lines.
    issued_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)


class SnapshotRow(Base):
    """The latest snapshot of a live call's flow (state, slots, counters), so another stream may resume it.

    No foreign key: a snapshot may be written before the call's first record, and it is deleted when
    the flow ends (or purged once no call could still be resumed). ``generation`` counts the resumes
    and ``seq`` the snapshots within one: a write lands only when it is newer than the row, so a
    late write from a stream that has since been replaced cannot overwrite the resumed one's.
    """

    __tablename__ = "call_snapshots"

    call_sid: Mapped[str] = mapped_column(String(SID_LENGTH), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    flow: Mapped[str] = mapped_column(String(NAME_LENGTH))
    state: Mapped[str] = mapped_column(String(NAME_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
