"""The campaign tables (SQLAlchemy 2 ORM), on PostgreSQL next to the queue's; changed only by a migration.

They have their own metadata (and their own Alembic chain, ``voicefsm/campaigns/migrations``): the
call records run on SQLite as well, these only where the queue engine runs, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from voicefsm.records.tables import NAMING_CONVENTION


class CampaignBase(DeclarativeBase):
    """Declarative base of the campaign tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CampaignRow(CampaignBase):
    """One campaign: a flow called over a list of numbers, with its pacing, cap, window and retry policy.

    ``active`` counts the calls placed and not yet ended (the shared concurrency cap, claimed with a
    conditional UPDATE); ``next_dial_at`` is the earliest time the next call may be placed (pacing,
    reserved with an UPDATE that moves it one interval on), and ``last_dial_at`` when the last call was
    actually placed (no call starts less than one interval after it, however late its job woke up).
    All live here, so every worker sees them.
    """

    __tablename__ = "voicefsm_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    flow: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # running | paused | cancelled
    rate: Mapped[float] = mapped_column()  # calls per second
    max_concurrent: Mapped[int] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer, default=0)
    next_dial_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_dial_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_backoff_s: Mapped[float] = mapped_column()
    window_start: Mapped[str] = mapped_column(String(5))  # HH:MM, the callee's local time
    window_end: Mapped[str] = mapped_column(String(5))
    default_timezone: Mapped[str] = mapped_column(String(64))
    machine_detection: Mapped[bool] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ContactRow(CampaignBase):
    """One number of a campaign: pending (a dial job exists or will), dialing (holds a slot) or done."""

    __tablename__ = "voicefsm_campaign_contacts"
    __table_args__ = (Index("ix_voicefsm_campaign_contacts_campaign_state", "campaign_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(Integer, ForeignKey("voicefsm_campaigns.id"))
    row: Mapped[int] = mapped_column(Integer)  # the CSV line it came from
    number: Mapped[str] = mapped_column(String(64))  # personal data: never logged unmasked
    timezone: Mapped[str] = mapped_column(String(64))
    slots: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # pending | dialing | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    call_sid: Mapped[str | None] = mapped_column(String(128), nullable=True)


class AttemptRow(CampaignBase):
    """One dial of one contact: the call Twilio placed and how it ended (status callback, AMD verdict)."""

    __tablename__ = "voicefsm_campaign_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(Integer, ForeignKey("voicefsm_campaign_contacts.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(Integer, ForeignKey("voicefsm_campaigns.id"))
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt
    call_sid: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32))  # dialing, then Twilio's CallStatus
    answered_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    worker: Mapped[str] = mapped_column(String(255))
    placed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
