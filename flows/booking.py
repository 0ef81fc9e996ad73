"""Book a dental appointment: day, time and name, read back, checked against the calendar, booked.

Each question re-asks twice on silence or on an answer it cannot use (a weekend day, a time
outside opening hours, words that are not a day), then gives up politely. After a yes, the
``check`` step looks the time up in the calendar: a free time is booked by the ``book`` step
(which finishes even if the caller hangs up meanwhile); a taken one gets the nearest free time
offered; a calendar that fails or does not answer in time is apologised for, and nothing is booked.

The calendar is a table (``calendar_bookings``) in the records database (``VOICEFSM_DB_URL``;
SQLite by default). To use your own calendar, give the ``calendar`` resource another opener that
returns an object with the same three async methods (``is_free``, ``nearest_free``, ``book``),
e.g. a client of your calendar's HTTP API; tests and ``voicefsm test`` use :class:`MemoryCalendar`.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator

import sqlalchemy as sa
from pydantic import BaseModel, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voicefsm.flow import Ask, Do, Hangup, Result, Say, VoiceFlow, YesNo, resource
from voicefsm.settings import Settings

OPENS = dt.time(8, 0)
CLOSES = dt.time(17, 30)
#: Every appointment takes half an hour; two may not overlap.
LENGTH = dt.timedelta(minutes=30)
#: How many days ahead the calendar looks for a free time when the chosen day is full.
SEARCH_DAYS = 14


class Appointment(BaseModel):
    """What the caller books."""

    day: dt.date | None = None
    time: dt.time | None = None
    name: str | None = None
    #: The nearest free time the calendar offered when the chosen one was taken.
    offered: dt.datetime | None = None

    @field_validator("day")
    @classmethod
    def _weekday(cls, day: dt.date | None) -> dt.date | None:
        if day is not None and day.weekday() >= 5:
            raise ValueError(f"we're closed on {day:%A}s; we're open Monday to Friday")
        return day

    @field_validator("time")
    @classmethod
    def _opening_hours(cls, time: dt.time | None) -> dt.time | None:
        if time is not None and not OPENS <= time <= CLOSES:
            raise ValueError("we're open from 8 in the morning until half past 5")
        return time


# -- the calendar ----------------------------------------------------------------------------------


class Calendar(abc.ABC):
    """Half-hour appointments in opening hours, Monday to Friday. Subclasses store them; rules are here."""

    @abc.abstractmethod
    async def starts_on(self, day: dt.date) -> list[dt.datetime]:
        """Start times of the appointments booked on ``day``."""

    @abc.abstractmethod
    async def _insert(self, start: dt.datetime, name: str) -> bool:
        """Store one appointment unless one overlaps it (atomically); False when one does."""

    async def is_free(self, start: dt.datetime) -> bool:
        """No appointment overlaps ``start`` .. ``start + LENGTH``."""
        return _free(start, await self.starts_on(start.date()))

    async def nearest_free(self, start: dt.datetime) -> dt.datetime | None:
        """The free slot nearest to ``start`` that day (earlier on a tie), else the first one on a later day.

        None when nothing is free in the next :data:`SEARCH_DAYS` days.
        """
        free = await self._free_slots(start.date())
        if free:
            return min(free, key=lambda slot: (abs(slot - start), slot))
        for ahead in range(1, SEARCH_DAYS + 1):
            day = start.date() + dt.timedelta(days=ahead)
            if day.weekday() < 5 and (free := await self._free_slots(day)):
                return free[0]
        return None

    async def _free_slots(self, day: dt.date) -> list[dt.datetime]:
        booked = await self.starts_on(day)
        slot, last = dt.datetime.combine(day, OPENS), dt.datetime.combine(day, CLOSES)
        free: list[dt.datetime] = []
        while slot <= last:
            if _free(slot, booked):
                free.append(slot)
            slot += LENGTH
        return free

    async def book(self, start: dt.datetime, name: str) -> bool:
        """Book ``start`` for ``name``; False when it was taken in the meantime."""
        return await self._insert(start, name)


def _free(start: dt.datetime, booked: list[dt.datetime]) -> bool:
    return all(abs(other - start) >= LENGTH for other in booked)


def _demo_bookings() -> dict[dt.datetime, str]:
    """The week tests run in (Monday 3 June 2024 is "today"): today is full, Tuesday has two bookings."""
    today = dt.datetime(2024, 6, 3, OPENS.hour, OPENS.minute)
    full_day = {today + LENGTH * n: "Walk-in" for n in range(20)}
    return {
        **full_day,
        dt.datetime(2024, 6, 4, 11, 0): "Dr. Who",
        dt.datetime(2024, 6, 4, 15, 0): "Rose Tyler",
    }


class MemoryCalendar(Calendar):
    """A calendar in memory: the fake tests use. It starts with :func:`_demo_bookings` unless given others."""

    def __init__(self, booked: dict[dt.datetime, str] | None = None) -> None:
        self.booked = dict(booked if booked is not None else _demo_bookings())

    async def starts_on(self, day: dt.date) -> list[dt.datetime]:
        return [start for start in self.booked if start.date() == day]

    async def _insert(self, start: dt.datetime, name: str) -> bool:
        if not _free(start, await self.starts_on(start.date())):
            return False
        self.booked[start] = name
        return True


_metadata = sa.MetaData()
bookings = sa.Table(
    "calendar_bookings",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("starts_at", sa.DateTime, nullable=False, unique=True),
    sa.Column("day", sa.Date, nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
)


_ASYNC_DRIVERS = {"sqlite://": "sqlite+aiosqlite://", "postgresql://": "postgresql+asyncpg://",
                  "postgres://": "postgresql+asyncpg://"}  # fmt: skip


class SqlCalendar(Calendar):
    """The calendar as a SQL table (SQLite or PostgreSQL through SQLAlchemy).

    A booking checks for an overlap and inserts in one transaction; two calls booking the same
    start at once are kept apart by the unique start. (Overlapping but different starts booked at
    the same instant on PostgreSQL would need a serializable transaction or an exclusion constraint.)
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> SqlCalendar:
        """Connect to ``url`` (the records' URL; plain sqlite:// or postgresql:// gets its async driver)."""
        for plain, driver in _ASYNC_DRIVERS.items():
            if url.startswith(plain):
                url = driver + url.removeprefix(plain)
        engine = create_async_engine(url, hide_parameters=True)
        async with engine.begin() as connection:
            await connection.run_sync(_metadata.create_all)
        return cls(engine)

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def starts_on(self, day: dt.date) -> list[dt.datetime]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(sa.select(bookings.c.starts_at).where(bookings.c.day == day))
            return [row.starts_at for row in rows]

    async def _insert(self, start: dt.datetime, name: str) -> bool:
        try:
            async with self.engine.begin() as connection:  # one transaction: check, then insert
                rows = await connection.execute(
                    sa.select(bookings.c.starts_at).where(bookings.c.day == start.date())
                )
                if not _free(start, [row.starts_at for row in rows]):
                    return False
                await connection.execute(
                    bookings.insert().values(
                        starts_at=start, day=start.date(), name=name, booked_at=dt.datetime.now(dt.UTC)
                    )
                )
        except IntegrityError:  # the same start booked by another call a moment ago
            return False
        return True

    async def all_bookings(self) -> list[tuple[dt.datetime, str]]:
        """Every appointment, in time order (for the practice, and for tests reading a booking back)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                sa.select(bookings.c.starts_at, bookings.c.name).order_by(bookings.c.starts_at)
            )
            return [(row.starts_at, row.name) for row in rows]


@resource(fake=MemoryCalendar)
async def calendar(settings: Settings | None) -> AsyncIterator[Calendar]:
    """The practice's calendar: a table in the records database."""
    opened = await SqlCalendar.open((settings or Settings()).db_url)
    try:
        yield opened
    finally:
        await opened.aclose()


# -- the flow --------------------------------------------------------------------------------------


class Booking(VoiceFlow):
    """Book a dental appointment."""

    slots_model = Appointment
    resources = (calendar,)
    #: A booking call enters a few dozen states; a calendar that keeps disagreeing with itself
    #: (free when checked, taken when written) would loop check -> book for ever: end it sooner.
    max_state_entries = 200

    greet = Say("Hi, this is Bright Smile Dental.", initial=True)
    ask_day = Ask("Which day would you like to come in?", slot="day")
    ask_time = Ask("What time on {day:%A}?", slot="time")
    ask_name = Ask("And what name should I put the booking under?", slot="name")
    confirm = Ask(
        "{name}, that's {day:%A} at {time:%H:%M}. Shall I book it? Say yes or press 1, or no or press 2.",
        expect=YesNo(),
        reprompt="Sorry, {reason}. Shall I book {day:%A} at {time:%H:%M}? Please say yes or no.",
    )
    check = Do(
        "check_calendar",
        results=("free", "taken"),
        filler="One moment while I check the calendar.",
        timeout_s=8.0,
    )
    offer = Ask(
        "Sorry, {day:%A} at {time:%H:%M} is taken. The nearest free time is {nearest_slot}. "
        "Shall I book that instead?",
        expect=YesNo(),
        reprompt="Sorry, {reason}. Shall I book {nearest_slot} instead? Please say yes or no.",
    )
    book = Do(
        "write_booking",
        results=("saved", "taken"),
        filler="Booking it now.",
        timeout_s=8.0,
        on_hangup="finish",
    )
    booked = Hangup("You're booked, {name}. See you on {day:%A}. Goodbye!")
    unavailable = Hangup(
        "Sorry, I can't book anything right now, so nothing is booked. Please call again later.",
        outcome="unavailable",
    )
    give_up = Hangup("Sorry, I couldn't get that. Please call again later.", outcome="gave_up")

    spoken = greet.to(ask_day)
    filled = (
        ask_day.to(ask_time)
        | ask_time.to(ask_name)
        | ask_name.to(confirm)
        | confirm.to(check, cond="yes")
        | confirm.to(ask_day)
        | offer.to(book, cond="yes", on="take_offer")
        | offer.to(ask_time)
    )
    free = check.to(book)
    taken = check.to(offer) | book.to(check)
    saved = book.to(booked)
    failure = check.to(unavailable) | book.to(unavailable)
    timed_out = check.to(unavailable) | book.to(unavailable)
    no_input = (
        ask_day.to(give_up)
        | ask_time.to(give_up)
        | ask_name.to(give_up)
        | confirm.to(give_up)
        | offer.to(give_up)
    )
    no_match = (
        ask_day.to(give_up)
        | ask_time.to(give_up)
        | ask_name.to(give_up)
        | confirm.to(give_up)
        | offer.to(give_up)
    )

    @property
    def start(self) -> dt.datetime:
        """The appointment the caller chose, as a date and time."""
        if self.slots.day is None or self.slots.time is None:
            raise ValueError("the day and time are not chosen yet")
        return dt.datetime.combine(self.slots.day, self.slots.time)

    @property
    def nearest_slot(self) -> str:
        """The offered time as spoken: "Tuesday at 10:30"."""
        offered = self.slots.offered
        return f"{offered:%A} at {offered:%H:%M}" if offered else ""

    async def check_calendar(self) -> Result | str:
        """Step: is the chosen time free? If not, find the nearest free time that day."""
        calendar: Calendar = self.resources.calendar
        if await calendar.is_free(self.start):
            return "free"
        nearest = await calendar.nearest_free(self.start)
        if nearest is None:
            raise LookupError(f"nothing is free in the {SEARCH_DAYS} days from {self.start:%A %d %B}")
        return Result("taken", offered=nearest)

    async def write_booking(self) -> str:
        """Step: write the appointment; "taken" when another caller got it first."""
        calendar: Calendar = self.resources.calendar
        return "saved" if await calendar.book(self.start, self.slots.name or "") else "taken"

    def take_offer(self) -> None:
        """The caller accepted the offered time: it becomes the chosen one."""
        if self.slots.offered is not None:
            self.slots.day, self.slots.time = self.slots.offered.date(), self.slots.offered.time()
