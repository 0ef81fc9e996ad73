"""The shipped flows, called through the real runtime with a scripted caller.

Per flow: the happy path, the no-input and no-match ladders, barge-in; and for every state a
hang-up, for every speaking state a TTS failure, for every listening state an STT failure,
each ending in a final state with no task left (the line checks the tasks).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flow_harness import FlowLine
from pydantic import BaseModel

from voicefsm.flow import VoiceFlow
from voicefsm.flow.loader import load_flow
from voicefsm.flow.spec import FlowSpec
from voicefsm.telephony.recording import SmsSent, Transferred

Booking = load_flow("flows/booking.py")
FrontDesk = load_flow("flows/ivr_menu.py")
Survey = load_flow("flows/survey.py")
EchoTest = load_flow("flows/echo.py")
FLOWS: tuple[type[VoiceFlow], ...] = (Booking, FrontDesk, Survey, EchoTest)
APOLOGY = "Sorry, something went wrong on our side. Please call again later."


def example_slots(flow: type[VoiceFlow]) -> BaseModel:
    """Slots a call could have by the time it reaches any state, so every prompt renders in full."""
    values: dict[str, Any] = {
        "day": dt.date(2024, 6, 4),
        "time": dt.time(14, 30),
        "name": "Ada",
        "rating": 4,
        "recommend": True,
    }
    model = flow.slots_model
    return model(**{key: value for key, value in values.items() if key in model.model_fields})


def states_where(predicate: Any) -> list[Any]:
    cases = []
    for flow in FLOWS:
        for state in FlowSpec.of(flow).states:
            if predicate(state):
                cases.append(pytest.param(flow, state.id, id=f"{flow.__name__}.{state.id}"))
    return cases


# -- booking ------------------------------------------------------------------------------------


async def test_booking_happy_path() -> None:
    async with FlowLine(Booking) as line:
        await line.listening("ask_day")
        line.say("next Tuesday please")
        await line.listening("ask_time")
        line.say("half past two")
        await line.listening("ask_name")
        line.say("Ada Lovelace")
        assert (await line.heard("Shall I book it")).text.startswith("Ada Lovelace, that's Tuesday at 14:30.")
        line.say("yes please")
        result = await line.ended()
    assert line.path == ["greet", "ask_day", "ask_time", "ask_name", "confirm", "check", "book", "booked"]
    assert result.outcome == "completed"
    assert result.slots == {
        "day": dt.date(2024, 6, 11),
        "time": dt.time(14, 30),
        "name": "Ada Lovelace",
        "offered": None,
    }
    assert line.agent_said[-1] == "You're booked, Ada Lovelace. See you on Tuesday. Goodbye!"


async def test_booking_no_on_confirm_starts_over_and_keys_work_too() -> None:
    async with FlowLine(Booking) as line:
        await line.listening("ask_day")
        line.say("Wednesday")
        await line.listening("ask_time")
        line.press("0930#")
        await line.listening("ask_name")
        line.say("Grace")
        await line.listening("confirm")
        line.press("2")
        await line.listening("ask_day")
        line.say("Thursday")
        await line.listening("ask_time")
        line.say("10 am")
        await line.listening("ask_name")
        line.say("Grace Hopper")
        await line.listening("confirm")
        line.press("1")
        result = await line.ended()
    assert result.slots == {
        "day": dt.date(2024, 6, 6),
        "time": dt.time(10, 0),
        "name": "Grace Hopper",
        "offered": None,
    }
    assert line.path.count("ask_day") == 2


async def test_booking_no_input_ladder() -> None:
    async with FlowLine(Booking) as line:
        result = await line.ended()
    assert line.agent_said == [
        "Hi, this is Bright Smile Dental.",
        "Which day would you like to come in?",
        "Sorry, I didn't hear anything. Which day would you like to come in?",
        "Sorry, I didn't hear anything. Which day would you like to come in?",
        "Sorry, I couldn't get that. Please call again later.",
    ]
    assert line.transitions[-1] == ("ask_day", "no_input", "give_up")
    assert result.outcome == "gave_up"


async def test_booking_no_match_ladder_reads_out_the_validators_reason() -> None:
    async with FlowLine(Booking) as line:
        await line.listening("ask_day")
        line.say("Saturday")
        weekend = await line.heard("Sorry")
        assert weekend.text == (
            "Sorry, we're closed on Saturdays; we're open Monday to Friday. "
            "Which day would you like to come in?"
        )
        line.say("the blue one")
        assert (await line.heard("Sorry")).text.startswith("Sorry, I didn't catch")
        line.say("purple")
        result = await line.ended()
    assert line.transitions[-1] == ("ask_day", "no_match", "give_up")
    assert result.slots["day"] is None


async def test_booking_barge_in() -> None:
    async with FlowLine(Booking) as line:
        await line.speaking("Which day")
        line.say("Friday")
        await line.speaking("What time on Friday")
        line.press("1015#")
        await line.listening("ask_name")
        line.hang_up()
        result = await line.ended()
    assert [turn.text for turn in line.turns if turn.interrupted] == [
        "Which day would you like to come in?",
        "What time on Friday?",
    ]
    assert result.slots["time"] == dt.time(10, 15)
    assert result.outcome == "hung_up"


# -- IVR menu -----------------------------------------------------------------------------------


async def test_menu_key_transfers_to_billing() -> None:
    async with FlowLine(FrontDesk) as line:
        await line.listening("menu")
        line.press("1")
        result = await line.ended()
    assert line.path == ["greet", "menu", "billing"]
    assert line.actions.of_type(Transferred) == [Transferred(line.call.call_sid or "", "+15550100001")]
    assert result.outcome == "transferred"


async def test_menu_speech_barge_in_reaches_support() -> None:
    async with FlowLine(FrontDesk) as line:
        await line.speaking("For billing")
        line.say("I need technical support please")
        result = await line.ended()
    assert result.final_state == "support"
    assert line.agent_said[-1] == "Connecting you to support."


async def test_menu_hours_repeat_and_goodbye() -> None:
    async with FlowLine(FrontDesk) as line:
        await line.listening("menu")
        line.press("9")  # hear it again
        await line.listening("menu")
        line.say("what are your opening hours")
        await line.heard("We're open Monday to Friday")
        await line.listening("anything_else")
        line.say("no thanks")
        result = await line.ended()
    assert line.path == ["greet", "menu", "menu", "hours", "anything_else", "goodbye"]
    assert result.final_state == "goodbye"
    assert not line.actions.records


async def test_menu_silence_goes_to_the_operator() -> None:
    async with FlowLine(FrontDesk) as line:
        result = await line.ended()
    assert line.transitions[-1] == ("menu", "no_input", "operator")
    assert result.outcome == "transferred"
    assert line.actions.of_type(Transferred)[0].number == "+15550100000"


async def test_menu_unplaceable_answers_go_to_the_operator() -> None:
    async with FlowLine(FrontDesk) as line:
        for answer in ("bananas", "the weather", "press 7"):
            await line.listening("menu")
            line.say(answer)
        result = await line.ended()
    assert line.transitions[-1] == ("menu", "no_match", "operator")
    assert result.final_state == "operator"


# -- survey -------------------------------------------------------------------------------------


async def test_survey_happy_path_texts_the_answers() -> None:
    async with FlowLine(Survey) as line:
        await line.listening("ask_rating")
        line.say("I'd say four")
        await line.listening("ask_recommend")
        line.say("yes")
        await line.listening("ask_comment")
        line.say("more parking please")
        result = await line.ended()
    assert result.slots == {"rating": 4, "recommend": True, "comment": "more parking please"}
    (sms,) = line.actions.of_type(SmsSent)
    assert sms.to == "+15550001234"
    assert sms.body == (
        "Your survey answers: rating 4 of 5; would recommend: yes; comment: more parking please. Thank you!"
    )


async def test_survey_keys_and_a_skipped_comment() -> None:
    async with FlowLine(Survey) as line:
        await line.listening("ask_rating")
        line.press("5")
        await line.listening("ask_recommend")
        line.press("2")
        result = await line.ended()  # silence on the optional comment
    assert line.transitions[-1] == ("ask_comment", "no_input", "thanks")
    assert line.actions.of_type(SmsSent)[0].body.endswith("would recommend: no; comment: -. Thank you!")
    assert result.final_state == "thanks"


async def test_survey_no_match_ladder_on_an_out_of_range_rating() -> None:
    async with FlowLine(Survey) as line:
        await line.listening("ask_rating")
        line.say("seven")
        assert (await line.heard("Sorry")).text.startswith("Sorry, that's more than 5.")
        line.say("nine")
        await line.heard("Sorry")
        line.say("ten")
        result = await line.ended()
    assert line.transitions[-1] == ("ask_rating", "no_match", "give_up")
    assert result.outcome == "declined"
    assert not line.actions.records


async def test_survey_no_input_ladder() -> None:
    async with FlowLine(Survey) as line:
        result = await line.ended()
    assert result.outcome == "declined"
    assert line.transitions[-1] == ("ask_rating", "no_input", "give_up")
    assert line.agent_said.count("Sorry, I didn't hear anything. " + line.agent_said[1]) == 2


# -- echo ---------------------------------------------------------------------------------------


async def test_echo_greets_then_echoes_until_the_caller_hangs_up() -> None:
    async with FlowLine(EchoTest) as line:
        await line.until(lambda: "echo" in line.path, "the echo to start")
        greeting_bytes = line.audio_bytes
        for _ in range(5):
            line.call.put_inbound(b"\x7f" * 160)
        await line.until(lambda: line.audio_bytes == greeting_bytes + 800, "5 frames echoed")
        line.hang_up()
        result = await line.ended()
    assert result.final_state == "echo"
    assert line.call.stt is None
    assert line.agent_said == ["Echo test. Everything you say will be played back to you."]


async def test_echo_ends_after_ten_minutes() -> None:
    async with FlowLine(EchoTest) as line:
        result = await line.ended()
    assert result.final_state == "echo"
    assert line.clock.now() == pytest.approx(600.0, abs=10)
    assert line.call.hangup_reason == "completed"


# -- every state, every fault -------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "state"), states_where(lambda s: not s.final and s.kind != "do"))
async def test_a_hang_up_in_any_state_ends_the_call(flow: type[VoiceFlow], state: str) -> None:
    async with FlowLine(flow(start_value=state, slots=example_slots(flow))) as line:
        await line.speaking("")  # its prompt is playing
        line.hang_up()
        result = await line.ended()
    assert line.transitions[-1] == (state, "disconnected", "hung_up")
    assert result.outcome == "hung_up"


@pytest.mark.parametrize(("flow", "state"), states_where(lambda s: s.kind in ("say", "ask")))
async def test_a_tts_failure_in_any_speaking_state_apologises(flow: type[VoiceFlow], state: str) -> None:
    async with FlowLine(flow(start_value=state, slots=example_slots(flow))) as line:
        line.tts.fail_next()
        result = await line.ended()
    assert line.transitions[-1] == (state, "tts_error", "failed")
    assert line.agent_said == [APOLOGY]
    assert result.outcome == "error"


@pytest.mark.parametrize(("flow", "state"), states_where(lambda s: s.kind == "ask"))
async def test_an_stt_failure_in_any_listening_state_apologises(flow: type[VoiceFlow], state: str) -> None:
    async with FlowLine(flow(start_value=state, slots=example_slots(flow))) as line:
        await line.listening(state)
        line.stt.fail()
        result = await line.ended()
    assert line.transitions[-1] == (state, "stt_error", "failed")
    assert line.agent_said[-1] == APOLOGY
    assert result.final_state == "failed"


@pytest.mark.parametrize(("flow", "state"), states_where(lambda s: s.kind == "ask"))
async def test_every_listening_state_gives_up_on_silence(flow: type[VoiceFlow], state: str) -> None:
    async with FlowLine(flow(start_value=state, slots=example_slots(flow))) as line:
        result = await line.ended()
    assert line.transitions[-1][:2] == (state, "no_input")
    assert result.final_state is not None
