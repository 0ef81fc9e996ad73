"""A state that asks for a slot again starts from a blank answer, unless it says otherwise."""

from __future__ import annotations

from pydantic import BaseModel

from voicefsm.flow import Ask, Hangup, VoiceFlow, YesNo, load_flow
from voicefsm.testing import FlowLine

Booking = load_flow("flows/booking.py")


async def test_a_slot_asked_again_is_cleared_so_giving_up_reports_no_stale_answer() -> None:
    async with FlowLine(Booking) as line:
        await line.answer("Wednesday")
        await line.answer("10 am")
        await line.answer("Ada")
        await line.answer("no")  # start again: ask_day is entered a second time
        for _ in range(3):
            await line.stay_silent()
        result = await line.ended()
    assert result.outcome == "gave_up"
    assert result.slots["day"] is None  # not Wednesday from before "start again"


class Name(BaseModel):
    name: str | None = None
    sure: bool | None = None


class KeepsName(VoiceFlow):
    slots_model = Name

    ask_name = Ask("Your name?", slot="name", keep_slot=True, initial=True)
    check = Ask("Is {name} right?", expect=YesNo())
    done = Hangup("Thanks, {name}.")
    give_up = Hangup("Goodbye.", outcome="gave_up")

    filled = ask_name.to(check) | check.to(done, cond="yes") | check.to(ask_name)
    no_input = ask_name.to(give_up) | check.to(give_up)
    no_match = ask_name.to(give_up) | check.to(give_up)


async def test_keep_slot_keeps_the_earlier_answer_when_the_state_is_entered_again() -> None:
    async with FlowLine(KeepsName) as line:
        await line.answer("Ada")
        await line.answer("no")
        for _ in range(3):
            await line.stay_silent()
        result = await line.ended()
    assert result.outcome == "gave_up"
    assert result.slots["name"] == "Ada"
