"""The fixed prompts of a flow: what can be synthesized before any call, exactly as it will be said."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel

from voicefsm.flow import Ask, Hangup, Say, SendSms, Transfer, VoiceFlow, YesNo
from voicefsm.flow.loader import load_flow
from voicefsm.flow.prompts import FixedPrompt, fixed_prompts, fixed_texts, next_prompt

FLOWS = Path(__file__).resolve().parents[2] / "flows"


class Caller(BaseModel):
    name: str | None = None


class Desk(VoiceFlow):
    """Fixed and templated prompts of every kind."""

    slots_model = Caller
    apology = "Our   system  failed; {{sorry}}."

    greet = Say("Welcome  to the {{front}} desk.", initial=True)
    ask_name = Ask(
        "Your name?",
        slot="name",
        reprompt=["Sorry, {reason}. Your name?", "Please spell your name."],
        no_input_prompt="Are you there?",
    )
    confirm = Ask("{name}, is that right?", expect=YesNo())
    transfer = Transfer("Putting you through.", number="+15550001111")
    texted = SendSms("We sent you a text, {name}.", body="Hello {name}", to="+15550002222")
    bye = Hangup()

    filled = ask_name.to(confirm) | confirm.to(transfer, cond="yes") | confirm.to(texted)
    spoken = greet.to(ask_name)
    no_input = ask_name.to(bye) | confirm.to(bye)
    no_match = ask_name.to(bye) | confirm.to(bye)


def test_every_spoken_template_without_fields_is_listed_as_the_runtime_will_say_it() -> None:
    assert fixed_prompts(Desk) == [
        FixedPrompt("greet", "prompt", "Welcome to the {front} desk."),
        FixedPrompt("ask_name", "prompt", "Your name?"),
        FixedPrompt("ask_name", "reprompt 2", "Please spell your name."),
        FixedPrompt("ask_name", "no_input_prompt", "Are you there?"),
        FixedPrompt("transfer", "prompt", "Putting you through."),
        FixedPrompt("failed", "prompt", "Our system failed; {sorry}."),
        FixedPrompt("limit", "prompt", Desk.limit_goodbye),  # the call limits' polite ending
        FixedPrompt("*", "apology", "Our   system  failed; {{sorry}}."),  # also said unrendered
    ]


def test_templated_and_unspoken_texts_are_left_out() -> None:
    texts = fixed_texts(Desk)
    assert not any("{name}" in text or "{reason}" in text for text in texts)
    assert "+15550001111" not in texts and "Hello {name}" not in texts and "+15550002222" not in texts


def test_the_booking_flow_has_its_greeting_its_no_input_prompts_its_endings_and_the_apology() -> None:
    booking = load_flow(FLOWS / "booking.py")
    listed = {(prompt.state, prompt.label) for prompt in fixed_prompts(booking)}
    assert {
        ("greet", "prompt"),
        ("ask_day", "prompt"),
        ("ask_day", "no_input_prompt"),
        ("give_up", "prompt"),
        ("failed", "prompt"),
    } <= listed
    assert ("ask_time", "prompt") not in listed  # "What time on {day:%A}?" depends on the call
    texts = fixed_texts(booking)
    assert texts[0] == "Hi, this is Bright Smile Dental."
    assert len(texts) == len(set(texts))


def test_the_next_prompt_is_known_only_when_the_transition_and_its_slots_are_certain() -> None:
    booking = load_flow(FLOWS / "booking.py")
    state = {s.id: s for s in booking.states}
    tuesday = dt.date(2026, 12, 8)
    assert next_prompt(state["greet"], "spoken", {}) == "Which day would you like to come in?"
    assert next_prompt(state["ask_day"], "filled", {"day": tuesday}) == "What time on Tuesday?"
    assert next_prompt(state["ask_day"], "filled", {"day": None}) is None  # its slot is not filled yet
    assert next_prompt(state["confirm"], "filled", {"day": tuesday}) is None  # guarded: yes or no decides
    assert (
        next_prompt(state["ask_day"], "no_input", {})
        == "Sorry, I couldn't get that. Please call again later."
    )
    assert next_prompt(state["greet"], "filled", {}) is None  # greet takes no such event
    assert next_prompt(Desk.texted, "spoken", {}) is None
