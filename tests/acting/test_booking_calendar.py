"""flows/booking.py's calendar: a real table in the records database, and a booking made on the chat line."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from voicefsm.cli import chat_session
from voicefsm.flow import load_flow, open_resources
from voicefsm.runtime.flow_listener import FlowListener
from voicefsm.settings import Settings

Booking = load_flow("flows/booking.py")
booking: ModuleType = sys.modules[Booking.__module__]
MONDAY = dt.date(2024, 6, 3)
TUESDAY_10 = dt.datetime(2024, 6, 4, 10, 0)


def settings_for(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")  # type: ignore[call-arg]


@pytest.fixture
async def calendar(tmp_path: Path) -> AsyncIterator[object]:
    opened = await booking.SqlCalendar.open(settings_for(tmp_path).db_url)
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_the_calendar_books_refuses_overlaps_and_finds_the_nearest_free_time(calendar: object) -> None:
    cal = calendar
    assert await cal.is_free(TUESDAY_10)  # type: ignore[attr-defined]
    assert await cal.book(TUESDAY_10, "Ada")  # type: ignore[attr-defined]
    assert not await cal.book(TUESDAY_10, "Grace")  # type: ignore[attr-defined]
    assert not await cal.book(TUESDAY_10 + dt.timedelta(minutes=15), "Grace")  # type: ignore[attr-defined]
    assert not await cal.is_free(TUESDAY_10 + dt.timedelta(minutes=20))  # type: ignore[attr-defined]
    assert await cal.nearest_free(TUESDAY_10) == dt.datetime(2024, 6, 4, 9, 30)  # type: ignore[attr-defined]
    assert await cal.all_bookings() == [(TUESDAY_10, "Ada")]  # type: ignore[attr-defined]


async def test_two_callers_booking_the_same_time_at_once_get_it_once(calendar: object) -> None:
    results = await asyncio.gather(*(calendar.book(TUESDAY_10, name) for name in ("Ada", "Grace", "Alan")))  # type: ignore[attr-defined]
    assert sorted(results) == [False, False, True]
    assert len(await calendar.all_bookings()) == 1  # type: ignore[attr-defined]


async def test_a_full_day_offers_the_first_free_time_of_the_next_weekday() -> None:
    friday = dt.datetime(2024, 6, 7, 8, 0)
    full = {friday + booking.LENGTH * n: "x" for n in range(20)}
    cal = booking.MemoryCalendar(full)
    assert await cal.nearest_free(friday.replace(hour=10)) == dt.datetime(2024, 6, 10, 8, 0)  # the Monday


class Progress(FlowListener):
    """Tells the scripted caller when the agent listens."""

    def __init__(self) -> None:
        self.listening = asyncio.Event()

    def on_listen(self, state: str) -> None:
        self.listening.set()

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.listening.clear()


async def answer_when_asked(progress: Progress, answers: list[str]) -> AsyncIterator[str]:
    for answer in answers:
        await progress.listening.wait()
        progress.listening.clear()
        yield answer
    await asyncio.Event().wait()  # the caller stays on the line; the chat ends when the flow does


async def test_a_booking_made_on_the_chat_line_is_in_the_calendar_table(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    progress = Progress()
    screen = io.StringIO()
    console = Console(file=screen, width=120, highlight=False, soft_wrap=True, force_terminal=False)
    answers = ["tomorrow", "10 am", "Ada Lovelace", "yes"]
    async with asyncio.timeout(20), open_resources(Booking, settings) as resources:
        result = await chat_session(
            Booking,
            answer_when_asked(progress, answers),
            console,
            today=MONDAY,
            listeners=[progress],
            resources=resources,
        )
    assert (result.outcome, result.final_state) == ("completed", "booked"), screen.getvalue()
    assert "You're booked, Ada Lovelace. See you on Tuesday. Goodbye!" in screen.getvalue()

    # Read it back through the calendar store, as the practice would.
    calendar = await booking.SqlCalendar.open(settings.db_url)
    try:
        assert await calendar.all_bookings() == [(TUESDAY_10, "Ada Lovelace")]
    finally:
        await calendar.aclose()

    # A second caller wanting the same time is offered the nearest free one.
    progress = Progress()
    answers = ["tomorrow", "10 am", "Grace Hopper", "yes", "yes"]
    async with asyncio.timeout(20), open_resources(Booking, settings) as resources:
        result = await chat_session(
            Booking,
            answer_when_asked(progress, answers),
            console,
            today=MONDAY,
            listeners=[progress],
            resources=resources,
        )
    assert "Sorry, Tuesday at 10:00 is taken. The nearest free time is Tuesday at 09:30." in screen.getvalue()
    assert result.final_state == "booked"
    calendar = await booking.SqlCalendar.open(settings.db_url)
    try:
        assert await calendar.all_bookings() == [
            (dt.datetime(2024, 6, 4, 9, 30), "Grace Hopper"),
            (TUESDAY_10, "Ada Lovelace"),
        ]
    finally:
        await calendar.aclose()
