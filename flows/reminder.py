"""Remind a patient of an appointment (an outbound call): confirm it, cancel it, or move it.

Made for campaigns: ``voicefsm campaign start flows/reminder.py numbers.csv`` calls each row's
number, and the row's other columns arrive as the call's parameters::

    number,name,day,time,appointment_id
    +15550001234,Ada,2024-06-05,09:30,A-1001

The call greets the patient by ``name`` with the appointment (``day`` YYYY-MM-DD, ``time`` HH:MM),
then asks whether they can make it: yes confirms it, cancel cancels it (after asking once more),
change asks for a new day and time and moves it if that time is free (a taken time is said, and
another time asked for). Each change is written by a step that finishes even if the patient hangs up
meanwhile. When answering-machine detection says a machine answered (``machine_answered``, sent once
the machine's greeting has ended, i.e. after the beep), the call leaves a voicemail and hangs up.

The appointments are a table (``reminder_appointments``) in the records database
(``VOICEFSM_DB_URL``; SQLite by default), keyed by ``appointment_id`` (or the name, day and time
when the row has none). To use your practice's own system, give the ``appointments`` resource another
opener returning an object with the same two async methods (``set_state`` and ``move``); tests and
``voicefsm test`` use :class:`MemoryAppointments`.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator

import sqlalchemy as sa
from pydantic import BaseModel, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from voicefsm.flow import Ask, Choice, Do, Hangup, Say, VoiceFlow, YesNo, resource
from voicefsm.settings import Settings

OPENS = dt.time(8, 0)
CLOSES = dt.time(17, 30)
PHONE = "555 0100"

ANSWERS = Choice(
    {
        "confirm": ["yes", "yeah", "sure", "confirm", "i can", "i'll be there", "i will be there"],
        "cancel": ["cancel", "cancel it", "i can't", "i cannot"],
        "change": ["change", "reschedule", "move", "another day", "another time", "different time"],
    },
    keys={"1": "confirm", "2": "cancel", "3": "change"},
)


class Reply(BaseModel):
    """What the patient answers."""

    answer: str | None = None
    sure: bool | None = None
    day: dt.date | None = None
    time: dt.time | None = None

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


# -- the appointments --------------------------------------------------------------------------------


class Appointments(abc.ABC):
    """Where the practice's appointments and the patients' answers are kept."""

    @abc.abstractmethod
    async def set_state(self, key: str, name: str, start: dt.datetime | None, state: str) -> None:
        """Record ``state`` (``confirmed`` or ``cancelled``) for the appointment ``key``."""

    @abc.abstractmethod
    async def move(self, key: str, name: str, start: dt.datetime) -> bool:
        """Move appointment ``key`` to ``start``; False when another appointment has that time."""


def _demo() -> dict[str, tuple[str, dt.datetime | None, str]]:
    """The week tests run in (Monday 3 June 2024 is "today"): Thursday at 10:00 is taken."""
    return {"A-0001": ("Dr. Who", dt.datetime(2024, 6, 6, 10, 0), "confirmed")}


class MemoryAppointments(Appointments):
    """Appointments in memory (key -> name, start, state): the fake tests use."""

    def __init__(self, booked: dict[str, tuple[str, dt.datetime | None, str]] | None = None) -> None:
        self.booked = dict(booked if booked is not None else _demo())

    async def set_state(self, key: str, name: str, start: dt.datetime | None, state: str) -> None:
        self.booked[key] = (name, start, state)

    async def move(self, key: str, name: str, start: dt.datetime) -> bool:
        if any(
            other != key and when == start and state != "cancelled"
            for other, (_, when, state) in self.booked.items()
        ):
            return False
        self.booked[key] = (name, start, "moved")
        return True


_metadata = sa.MetaData()
appointments_table = sa.Table(
    "reminder_appointments",
    _metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("starts_at", sa.DateTime, nullable=True, index=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

_ASYNC_DRIVERS = {"sqlite://": "sqlite+aiosqlite://", "postgresql://": "postgresql+asyncpg://",
                  "postgres://": "postgresql+asyncpg://"}  # fmt: skip


class SqlAppointments(Appointments):
    """The appointments as a SQL table (SQLite or PostgreSQL through SQLAlchemy)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> SqlAppointments:
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

    async def set_state(self, key: str, name: str, start: dt.datetime | None, state: str) -> None:
        async with self.engine.begin() as connection:
            await self._upsert(connection, key, name, start, state)

    async def move(self, key: str, name: str, start: dt.datetime) -> bool:
        async with self.engine.begin() as connection:  # one transaction: check, then write
            clash = await connection.execute(
                sa.select(appointments_table.c.key).where(
                    appointments_table.c.starts_at == start,
                    appointments_table.c.state != "cancelled",
                    appointments_table.c.key != key,
                )
            )
            if clash.first() is not None:
                return False
            await self._upsert(connection, key, name, start, "moved")
        return True

    async def all(self) -> list[tuple[str, str, dt.datetime | None, str]]:
        """Every appointment the calls touched: key, name, start, state (for the practice and tests)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(sa.select(appointments_table).order_by(appointments_table.c.key))
            return [(row.key, row.name, row.starts_at, row.state) for row in rows]

    @staticmethod
    async def _upsert(
        connection: AsyncConnection,
        key: str,
        name: str,
        start: dt.datetime | None,
        state: str,
    ) -> None:
        values = {"name": name, "starts_at": start, "state": state, "updated_at": dt.datetime.now(dt.UTC)}
        updated = await connection.execute(
            appointments_table.update().where(appointments_table.c.key == key).values(**values)
        )
        if updated.rowcount == 0:
            await connection.execute(appointments_table.insert().values(key=key, **values))


@resource(fake=MemoryAppointments)
async def appointments(settings: Settings | None) -> AsyncIterator[Appointments]:
    """The practice's appointments: a table in the records database."""
    opened = await SqlAppointments.open((settings or Settings()).db_url)
    try:
        yield opened
    finally:
        await opened.aclose()


# -- the flow --------------------------------------------------------------------------------------


class Reminder(VoiceFlow):
    """Remind a patient of an appointment; confirm, cancel or move it; leave a voicemail on a machine."""

    slots_model = Reply
    resources = (appointments,)

    greet = Say(
        "{hello}, this is Bright Smile Dental calling about your appointment {when}.",
        initial=True,
    )
    ask = Ask(
        "Can you make it? Say yes to confirm, cancel to cancel it, or change to pick another time. "
        "You can also press 1, 2 or 3.",
        slot="answer",
        expect=ANSWERS,
        reprompt="Sorry, {reason}. Say yes, cancel, or change; or press 1, 2 or 3.",
    )
    ask_sure = Ask(
        "Just to be sure: shall I cancel your appointment {when}? Say yes or no.",
        slot="sure",
        expect=YesNo(),
    )
    ask_day = Ask("Which day would suit you better?", slot="day")
    ask_time = Ask("What time on {day:%A}?", slot="time")
    confirm = Do("confirm_appointment", timeout_s=8.0, on_hangup="finish")
    cancel = Do("cancel_appointment", timeout_s=8.0, on_hangup="finish")
    move = Do(
        "move_appointment",
        results=("moved", "taken"),
        filler="One moment while I check the calendar.",
        timeout_s=8.0,
        on_hangup="finish",
    )
    taken_time = Say("Sorry, {day:%A} at {time:%H:%M} is taken.")
    confirmed = Hangup("Thank you{to_patient}, your appointment is confirmed. Goodbye!", outcome="confirmed")
    cancelled = Hangup(
        "Your appointment is cancelled. Call us on " + PHONE + " whenever you'd like a new one. Goodbye!",
        outcome="cancelled",
    )
    rescheduled = Hangup(
        "Done: your appointment is now on {day:%A} at {time:%H:%M}. See you then{to_patient}. Goodbye!",
        outcome="rescheduled",
    )
    voicemail = Hangup(
        "Hello, this is Bright Smile Dental with a reminder{for_patient} about your appointment {when}. "
        "To change it, please call us on " + PHONE + ". Goodbye!",
        outcome="voicemail",
    )
    unavailable = Hangup(
        "Sorry, I can't change anything right now, so nothing has changed. "
        "Please call us on " + PHONE + ". Goodbye!",
        outcome="unavailable",
    )
    give_up = Hangup(
        "Sorry, I couldn't get that. If you need to change your appointment, please call us on "
        + PHONE
        + ". Goodbye!",
        outcome="gave_up",
    )

    spoken = greet.to(ask) | taken_time.to(ask_time)
    filled = (
        ask.to(confirm, cond="wants_confirm")
        | ask.to(ask_sure, cond="wants_cancel")
        | ask.to(ask_day)
        | ask_sure.to(cancel, cond="yes")
        | ask_sure.to(ask)
        | ask_day.to(ask_time)
        | ask_time.to(move)
    )
    done = confirm.to(confirmed) | cancel.to(cancelled)
    moved = move.to(rescheduled)
    taken = move.to(taken_time)
    failure = confirm.to(unavailable) | cancel.to(unavailable) | move.to(unavailable)
    timed_out = confirm.to(unavailable) | cancel.to(unavailable) | move.to(unavailable)
    no_input = ask.to(give_up) | ask_sure.to(give_up) | ask_day.to(give_up) | ask_time.to(give_up)
    no_match = ask.to(give_up) | ask_sure.to(give_up) | ask_day.to(give_up) | ask_time.to(give_up)
    # A machine's greeting is heard as words the question cannot use (a re-prompt); once it ends,
    # answering-machine detection says so, and whatever is being said gives way to the voicemail.
    machine_answered = greet.to(voicemail) | ask.to(voicemail)

    # -- what the campaign row says ---------------------------------------------------------------

    @property
    def patient(self) -> str:
        """The patient's name, from the call's ``name`` parameter ("" without one)."""
        return self.parameters.get("name", "").strip()

    @property
    def hello(self) -> str:
        """ "Hello Ada" ("Hello" without a name)."""
        return f"Hello {self.patient}" if self.patient else "Hello"

    @property
    def to_patient(self) -> str:
        """ ", Ada", for "Thank you, Ada" ("" without a name)."""
        return f", {self.patient}" if self.patient else ""

    @property
    def for_patient(self) -> str:
        """ " for Ada", for "a reminder for Ada" ("" without a name)."""
        return f" for {self.patient}" if self.patient else ""

    @property
    def start(self) -> dt.datetime | None:
        """The appointment from the ``day`` (YYYY-MM-DD) and ``time`` (HH:MM) parameters, if both read."""
        try:
            day = dt.date.fromisoformat(self.parameters.get("day", "").strip())
            time = dt.time.fromisoformat(self.parameters.get("time", "").strip())
        except ValueError:
            return None
        return dt.datetime.combine(day, time)

    @property
    def when(self) -> str:
        """The appointment as spoken: "on Wednesday 5 June at 09:30" (or "with us" without one)."""
        start = self.start
        if start is None:
            return "with us"
        return f"on {start:%A} {start.day} {start:%B} at {start:%H:%M}"

    @property
    def appointment_key(self) -> str:
        """The ``appointment_id`` parameter, or the name and time when the row has none."""
        given = self.parameters.get("appointment_id", "").strip()
        return given or f"{self.patient or self.caller or 'unknown'} {self.start or 'unknown'}"

    # -- guards and steps -------------------------------------------------------------------------

    def wants_confirm(self, value: object) -> bool:
        """Guard: the patient can make it."""
        return value == "confirm"

    def wants_cancel(self, value: object) -> bool:
        """Guard: the patient wants to cancel."""
        return value == "cancel"

    async def confirm_appointment(self) -> None:
        """Step: mark the appointment confirmed."""
        book: Appointments = self.resources.appointments
        await book.set_state(self.appointment_key, self.patient, self.start, "confirmed")

    async def cancel_appointment(self) -> None:
        """Step: mark the appointment cancelled."""
        book: Appointments = self.resources.appointments
        await book.set_state(self.appointment_key, self.patient, self.start, "cancelled")

    async def move_appointment(self) -> str:
        """Step: move the appointment to the chosen day and time; "taken" when that time is booked."""
        if self.slots.day is None or self.slots.time is None:
            raise ValueError("the new day and time are not chosen yet")
        book: Appointments = self.resources.appointments
        new = dt.datetime.combine(self.slots.day, self.slots.time)
        return "moved" if await book.move(self.appointment_key, self.patient, new) else "taken"
