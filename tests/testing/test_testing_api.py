"""The public test kit through its pytest fixtures: a flow author's test, as they would write it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voicefsm.flow.loader import load_flow
from voicefsm.testing import FlowLine

FLOWS = Path(__file__).resolve().parents[2] / "flows"
Booking = load_flow(FLOWS / "booking.py")


async def test_a_booking_through_the_fixture(flow_line) -> None:  # type: ignore[no-untyped-def]
    async with flow_line(Booking) as line:
        await line.heard("Which day")
        assert await line.answer("next Tuesday") == "ask_day"
        await line.answer("half past ten")
        await line.answer("Ada Lovelace")
        await line.heard(re.compile(r"^Ada Lovelace, that's Tuesday at 10:30\."))
        assert await line.keys("1") == "confirm"
        result = await line.ended()
    assert result.outcome == "completed"
    assert line.path == ["greet", "ask_day", "ask_time", "ask_name", "confirm", "booked"]
    assert str(line.slots["day"]) == "2024-06-11"


async def test_silence_takes_no_real_time_and_follows_the_ladder() -> None:
    async with FlowLine(Booking) as line:
        for _ in range(3):
            assert await line.stay_silent() == "ask_day"
        result = await line.ended()
    assert result.outcome == "gave_up"
    assert line.clock.now() > 3 * 6  # three no-input timers of simulated time went by


async def test_a_barge_in_answers_the_question_being_asked() -> None:
    async with FlowLine(Booking) as line:
        await line.listening("ask_day")  # not yet: greet plays first
        line.say("Friday")
        prompt = await line.barge_in("ten am")
        assert prompt.startswith("What time on Friday")
        await line.heard("what name")
        line.hang_up()
        await line.ended()
    assert line.clears >= 1
    assert line.slots["time"] is not None


async def test_a_wait_that_cannot_be_met_fails_with_the_conversation_so_far() -> None:
    async with FlowLine(Booking, wait_s=1.0) as line:
        await line.answer("Friday")
        with pytest.raises(AssertionError, match=r"the agent to say 'never said'.*path: greet -> ask_day"):
            await line.heard("never said")
        line.hang_up()
        await line.ended()
