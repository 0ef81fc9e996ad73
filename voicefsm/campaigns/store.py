"""The campaign tables as operations: create, claim a slot, reserve a pacing slot, record how calls end.

Every decision shared by the workers is one statement (or one transaction) on PostgreSQL:

- the concurrency cap: ``UPDATE campaigns SET active = active + 1 WHERE active < max_concurrent``,
  in the same transaction as the contact's ``pending -> dialing`` (the row lock serialises claimers and
  PostgreSQL re-checks the WHERE after waiting, so the cap holds whatever number of workers claim);
- pacing: ``next_dial_at`` moves one interval (1/rate) on per reserved call, in one UPDATE; the caller
  waits the returned delay, computed on the database's clock (no clock skew between hosts);
- the end of a call (Twilio's status callback, on any worker): the attempt is closed once (``WHERE
  ended_at IS NULL``), the slot released, the contact finished or made pending for a retry.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from voicefsm.campaigns.contacts import Contact
from voicefsm.campaigns.errors import CampaignError, UnknownCampaignError
from voicefsm.campaigns.schema import prepare_campaign_schema
from voicefsm.campaigns.tables import AttemptRow, CampaignRow, ContactRow
from voicefsm.records.dburl import database_url

#: Twilio's terminal CallStatus values, and those worth another try later.
TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
RETRYABLE = frozenset({"busy", "no-answer", "failed"})
#: Outcomes a contact can end with (exactly one each).
OUTCOMES = ("answered", "machine", "busy", "no-answer", "failed", "canceled", "cancelled")
CampaignState = Literal["running", "paused", "cancelled"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def worker_name() -> str:
    """This process as the attempts name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class CampaignOptions:
    """How a campaign dials: pacing, cap, retries, window, AMD."""

    rate: float = 1.0
    max_concurrent: int = 2
    max_attempts: int = 3
    retry_backoff_s: float = 300.0
    window_start: str = "09:00"
    window_end: str = "20:00"
    default_timezone: str = "UTC"
    machine_detection: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 100:
            raise CampaignError(f"--rate {self.rate:g}: calls per second must be above 0 and at most 100")
        if self.max_concurrent < 1:
            raise CampaignError(f"--max-concurrent {self.max_concurrent}: allow at least one call at a time")
        if self.max_attempts < 1:
            raise CampaignError(f"--max-attempts {self.max_attempts}: each number needs at least one attempt")
        if self.retry_backoff_s < 0:
            raise CampaignError(f"--retry-backoff {self.retry_backoff_s:g}: a delay cannot be negative")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A slot held for one dial: the attempt to place."""

    attempt_id: int
    contact_id: int
    campaign_id: int
    number: str
    slots: dict[str, str]
    machine_detection: bool
    attempt: int


@dataclass(frozen=True, slots=True)
class NotNow:
    """Why a contact is not dialed now: ``gone`` (done or dialing elsewhere), ``paused``, ``cancelled``,
    ``full`` (the cap is reached), ``window`` (outside its calling window until ``until``)."""

    reason: Literal["gone", "paused", "cancelled", "full", "window"]
    until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """A contact to dial again at ``at``."""

    contact_id: int
    at: dt.datetime


@dataclass(slots=True)
class Progress:
    """Counts of a campaign's numbers: by state, and the finished ones by outcome."""

    id: int
    name: str
    flow: str
    state: str
    total: int
    pending: int
    dialing: int
    done: int
    outcomes: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    rate: float = 0.0
    max_concurrent: int = 0

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.dialing == 0

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "flow": self.flow,
            "state": "finished" if self.finished and self.state != "cancelled" else self.state,
            "total": self.total,
            "pending": self.pending,
            "dialing": self.dialing,
            "done": self.done,
            "outcomes": dict(self.outcomes),
            "attempts": self.attempts,
            "rate": self.rate,
            "max_concurrent": self.max_concurrent,
        }


def outcome_of(status: str, answered_by: str | None) -> str:
    """A finished contact's outcome: Twilio's terminal status, or ``machine`` for a machine that answered."""
    if status == "completed":
        return "machine" if answered_by and answered_by.startswith("machine") else "answered"
    return status


class CampaignStore:
    """The campaign tables on one PostgreSQL database (its own connection pool)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, queue_schema: str) -> CampaignStore:
        """Connect to ``url`` (PostgreSQL) and bring the queue's and the campaign tables up to date."""
        engine = create_async_engine(database_url(url), pool_size=10, max_overflow=20)
        try:
            await prepare_campaign_schema(engine, queue_schema)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def aclose(self) -> None:
        await self.engine.dispose()

    def _session(self) -> AsyncSession:
        return self._sessions()

    async def create(
        self, name: str, flow: str, options: CampaignOptions, contacts: Sequence[Contact]
    ) -> int:
        """A running campaign with its contacts, all pending; returns its id."""
        now = utcnow()
        async with self._session() as session, session.begin():
            campaign = CampaignRow(
                name=name,
                flow=flow,
                state="running",
                rate=options.rate,
                max_concurrent=options.max_concurrent,
                active=0,
                next_dial_at=now,
                max_attempts=options.max_attempts,
                retry_backoff_s=options.retry_backoff_s,
                window_start=options.window_start,
                window_end=options.window_end,
                default_timezone=options.default_timezone,
                machine_detection=options.machine_detection,
                created_at=now,
            )
            session.add(campaign)
            await session.flush()
            session.add_all(
                ContactRow(
                    campaign_id=campaign.id,
                    row=contact.row,
                    number=contact.number,
                    timezone=contact.timezone or options.default_timezone,
                    slots=dict(contact.slots),
                    state="pending",
                    attempts=0,
                )
                for contact in contacts
            )
            return campaign.id

    async def pending_contacts(self, campaign_id: int) -> list[tuple[int, dt.datetime | None]]:
        """The pending contacts of a campaign and when each may be dialed (None: now)."""
        async with self._session() as session:
            rows = await session.execute(
                select(ContactRow.id, ContactRow.next_attempt_at)
                .where(ContactRow.campaign_id == campaign_id, ContactRow.state == "pending")
                .order_by(ContactRow.id)
            )
            return [(row[0], row[1]) for row in rows]

    async def contact_window(self, contact_id: int) -> tuple[str, str, str, str, int] | None:
        """(campaign state, window start, window end, the contact's time zone, campaign id), or None."""
        async with self._session() as session:
            row = (
                await session.execute(
                    select(
                        CampaignRow.state,
                        CampaignRow.window_start,
                        CampaignRow.window_end,
                        ContactRow.timezone,
                        CampaignRow.id,
                    )
                    .join(CampaignRow, CampaignRow.id == ContactRow.campaign_id)
                    .where(ContactRow.id == contact_id)
                )
            ).first()
            return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    async def claim(self, contact_id: int, worker: str) -> Claimed | NotNow:
        """Take a slot under the shared cap and open an attempt for ``contact_id``, or say why not now."""
        async with self._session() as session, session.begin():
            contact = (
                await session.execute(select(ContactRow).where(ContactRow.id == contact_id).with_for_update())
            ).scalar_one_or_none()
            if contact is None or contact.state != "pending":
                return NotNow("gone")
            taken = (
                await session.execute(
                    update(CampaignRow)
                    .where(
                        CampaignRow.id == contact.campaign_id,
                        CampaignRow.state == "running",
                        CampaignRow.active < CampaignRow.max_concurrent,
                    )
                    .values(active=CampaignRow.active + 1)
                    .returning(CampaignRow.machine_detection)
                )
            ).first()
            if taken is None:
                state = await session.scalar(
                    select(CampaignRow.state).where(CampaignRow.id == contact.campaign_id)
                )
                if state == "cancelled":
                    contact.state = "done"
                    contact.outcome = "cancelled"
                    return NotNow("cancelled")
                return NotNow("paused" if state == "paused" else "full")
            contact.state = "dialing"
            contact.attempts += 1
            attempt = AttemptRow(
                contact_id=contact.id,
                campaign_id=contact.campaign_id,
                number=contact.attempts,
                status="dialing",
                worker=worker,
                placed_at=utcnow(),
            )
            session.add(attempt)
            await session.flush()
            return Claimed(
                attempt_id=attempt.id,
                contact_id=contact.id,
                campaign_id=contact.campaign_id,
                number=contact.number,
                slots=dict(contact.slots),
                machine_detection=bool(taken[0]),
                attempt=contact.attempts,
            )

    async def unclaim(self, attempt_id: int) -> None:
        """Undo :meth:`claim` for an attempt whose call was never asked for: slot freed, number pending."""
        async with self._session() as session, session.begin():
            attempt = await session.get(AttemptRow, attempt_id, with_for_update=True)
            if attempt is None or attempt.ended_at is not None or attempt.call_sid is not None:
                return
            await session.execute(
                update(CampaignRow)
                .where(CampaignRow.id == attempt.campaign_id)
                .values(active=CampaignRow.active - 1)
            )
            await session.execute(
                update(ContactRow)
                .where(ContactRow.id == attempt.contact_id, ContactRow.state == "dialing")
                .values(state="pending", attempts=ContactRow.attempts - 1)
            )
            await session.delete(attempt)

    async def reserve_pace(self, campaign_id: int) -> float:
        """Reserve the campaign's next dialing time; returns the seconds to wait until it (>= 0)."""
        async with self.engine.begin() as connection:
            waited = await connection.scalar(
                text(
                    "UPDATE voicefsm_campaigns SET next_dial_at = GREATEST(next_dial_at, clock_timestamp()) "
                    "+ make_interval(secs => 1.0 / rate) WHERE id = :id "
                    "RETURNING EXTRACT(EPOCH FROM (next_dial_at - make_interval(secs => 1.0 / rate) "
                    "- clock_timestamp()))"
                ),
                {"id": campaign_id},
            )
        return max(0.0, float(waited or 0.0))

    async def take_dial_turn(self, campaign_id: int, attempt_id: int) -> float:
        """0 when the attempt's call may start now (the time is kept as its ``placed_at``); else the
        seconds until one may.

        Calls start at least 1/rate apart across every worker, even when a job wakes late (a busy
        host) and the next one is on time: the reserved slots order the jobs, this spaces the calls.
        """
        async with self.engine.begin() as connection:
            taken = await connection.scalar(
                text(
                    "WITH turn AS (UPDATE voicefsm_campaigns SET last_dial_at = clock_timestamp() "
                    "WHERE id = :id AND (last_dial_at IS NULL OR "
                    "last_dial_at <= clock_timestamp() - make_interval(secs => 1.0 / rate)) "
                    "RETURNING last_dial_at) "
                    "UPDATE voicefsm_campaign_attempts SET placed_at = (SELECT last_dial_at FROM turn) "
                    "WHERE id = :attempt AND EXISTS (SELECT 1 FROM turn) RETURNING id"
                ),
                {"id": campaign_id, "attempt": attempt_id},
            )
            if taken is not None:
                return 0.0
            waited = await connection.scalar(
                text(
                    "SELECT EXTRACT(EPOCH FROM (last_dial_at + make_interval(secs => 1.0 / rate) "
                    "- clock_timestamp())) FROM voicefsm_campaigns WHERE id = :id"
                ),
                {"id": campaign_id},
            )
        return max(0.001, float(waited or 0.0))

    async def placed(self, attempt_id: int, call_sid: str) -> None:
        """Twilio accepted the call: remember its sid on the attempt and the contact."""
        async with self._session() as session, session.begin():
            attempt = await session.get(AttemptRow, attempt_id)
            if attempt is None:
                return
            attempt.call_sid = call_sid
            if attempt.ended_at is None:
                attempt.status = "queued"
            await session.execute(
                update(ContactRow).where(ContactRow.id == attempt.contact_id).values(call_sid=call_sid)
            )

    async def note_error(self, attempt_id: int, error: str) -> None:
        """Remember why an attempt's placing is in doubt (it stays open)."""
        async with self._session() as session, session.begin():
            await session.execute(update(AttemptRow).where(AttemptRow.id == attempt_id).values(error=error))

    async def call_seen(self, attempt_id: int, call_sid: str) -> None:
        """A callback names the attempt's call: it exists (settles a create whose answer was lost)."""
        async with self._session() as session, session.begin():
            attempt = await session.get(AttemptRow, attempt_id)
            if attempt is None or attempt.call_sid is not None:
                return
        await self.placed(attempt_id, call_sid)

    async def answered_by(self, attempt_id: int, answered_by: str) -> None:
        """Record the answering-machine verdict (``human``, ``machine_end_beep``...) of an attempt."""
        async with self._session() as session, session.begin():
            attempt = await session.get(AttemptRow, attempt_id)
            if attempt is None:
                return
            attempt.answered_by = answered_by
            await session.execute(
                update(ContactRow).where(ContactRow.id == attempt.contact_id).values(answered_by=answered_by)
            )

    async def ended(
        self, attempt_id: int, status: str, *, answered_by: str | None = None, error: str | None = None
    ) -> Retry | None:
        """Close an attempt (once), release its slot, and finish its contact or schedule a retry.

        ``status`` is Twilio's terminal CallStatus (or ``failed`` when the call could not be placed).
        Returns the retry to defer, if any. A second report of the same end changes nothing.
        """
        now = utcnow()
        async with self._session() as session, session.begin():
            closed = (
                await session.execute(
                    update(AttemptRow)
                    .where(AttemptRow.id == attempt_id, AttemptRow.ended_at.is_(None))
                    .values(
                        status=status,
                        ended_at=now,
                        error=error,
                        answered_by=func.coalesce(answered_by, AttemptRow.answered_by),
                    )
                    .returning(AttemptRow.contact_id, AttemptRow.campaign_id, AttemptRow.answered_by)
                )
            ).first()
            if closed is None:
                return None
            contact_id, campaign_id, verdict = closed
            campaign = (
                await session.execute(
                    update(CampaignRow)
                    .where(CampaignRow.id == campaign_id)
                    .values(active=CampaignRow.active - 1)
                    .returning(CampaignRow.state, CampaignRow.max_attempts, CampaignRow.retry_backoff_s)
                )
            ).one()
            state, max_attempts, backoff_s = campaign
            contact = await session.get(ContactRow, contact_id, with_for_update=True)
            assert contact is not None
            if status in RETRYABLE and contact.attempts < max_attempts and state != "cancelled":
                at = now + dt.timedelta(seconds=backoff_s * 2 ** (contact.attempts - 1))
                contact.state = "pending"
                contact.next_attempt_at = at
                return Retry(contact_id, at)
            contact.state = "done"
            contact.outcome = outcome_of(status, verdict)
            contact.answered_by = verdict
            return None

    async def call_parameters(self, attempt_id: int) -> dict[str, str]:
        """What the flow of an attempt's call gets as parameters: its CSV row's values and the ids."""
        async with self._session() as session:
            row = (
                await session.execute(
                    select(ContactRow.slots, ContactRow.campaign_id, ContactRow.id)
                    .join(AttemptRow, AttemptRow.contact_id == ContactRow.id)
                    .where(AttemptRow.id == attempt_id)
                )
            ).first()
        if row is None:
            return {}
        slots, campaign_id, contact_id = row
        ids = {"campaign": str(campaign_id), "campaign_contact": str(contact_id)}
        return {**{str(key): str(value) for key, value in dict(slots).items()}, **ids}

    async def expire_attempts(self, *, unplaced_after_s: float, unended_after_s: float) -> list[Retry]:
        """Close attempts whose end will never be reported, releasing their slots; returns the retries.

        An attempt with no call sid after ``unplaced_after_s`` lost its worker between the slot and the
        call; one with no end after ``unended_after_s`` (beyond Twilio's longest call) lost its callback.
        """
        async with self.engine.connect() as connection:
            # A claimed attempt waits at most its turn (about max_concurrent / rate) before it dials.
            rows = await connection.execute(
                text(
                    "SELECT a.id, a.call_sid FROM voicefsm_campaign_attempts a "
                    "JOIN voicefsm_campaigns c ON c.id = a.campaign_id WHERE a.ended_at IS NULL AND ("
                    "(a.call_sid IS NULL AND a.placed_at < clock_timestamp() - "
                    "make_interval(secs => :unplaced + 2.0 * c.max_concurrent / c.rate)) "
                    "OR a.placed_at < clock_timestamp() - make_interval(secs => :unended))"
                ),
                {"unplaced": unplaced_after_s, "unended": unended_after_s},
            )
            stale = [(row[0], row[1]) for row in rows]
        retries = []
        for attempt_id, call_sid in stale:
            why = (
                "no status callback came for the call"
                if call_sid
                else "its worker stopped before placing the call"
            )
            retry = await self.ended(attempt_id, "failed", error=why)
            if retry is not None:
                retries.append(retry)
        return retries

    async def attempt_of_call(self, call_sid: str) -> int | None:
        """The attempt that placed ``call_sid``."""
        async with self._session() as session:
            return await session.scalar(select(AttemptRow.id).where(AttemptRow.call_sid == call_sid))

    async def set_state(self, campaign_id: int, state: CampaignState) -> str:
        """Pause, resume or cancel; returns the state before. Cancelling finishes every pending contact."""
        async with self._session() as session, session.begin():
            campaign = await session.get(CampaignRow, campaign_id, with_for_update=True)
            if campaign is None:
                raise UnknownCampaignError(campaign_id)
            before = campaign.state
            if before == "cancelled":
                return before
            campaign.state = state
            if state == "cancelled":
                await session.execute(
                    update(ContactRow)
                    .where(ContactRow.campaign_id == campaign_id, ContactRow.state == "pending")
                    .values(state="done", outcome="cancelled")
                )
            return before

    async def progress(self, campaign_id: int) -> Progress:
        """Counts by state and outcome."""
        async with self._session() as session:
            campaign = await session.get(CampaignRow, campaign_id)
            if campaign is None:
                raise UnknownCampaignError(campaign_id)
            rows = await session.execute(
                select(ContactRow.state, ContactRow.outcome, func.count(), func.sum(ContactRow.attempts))
                .where(ContactRow.campaign_id == campaign_id)
                .group_by(ContactRow.state, ContactRow.outcome)
            )
            progress = Progress(
                campaign.id,
                campaign.name,
                campaign.flow,
                campaign.state,
                0,
                0,
                0,
                0,
                rate=campaign.rate,
                max_concurrent=campaign.max_concurrent,
            )
            for state, outcome, count, attempts in rows:
                progress.total += count
                progress.attempts += int(attempts or 0)
                if state == "pending":
                    progress.pending += count
                elif state == "dialing":
                    progress.dialing += count
                else:
                    progress.done += count
                    progress.outcomes[outcome or "unknown"] = (
                        progress.outcomes.get(outcome or "unknown", 0) + count
                    )
            return progress

    async def campaign_ids(self) -> list[int]:
        async with self._session() as session:
            return list(await session.scalars(select(CampaignRow.id).order_by(CampaignRow.id)))
