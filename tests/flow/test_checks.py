"""Static checks: flows that could strand a caller are rejected when they are defined."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import BaseModel

from voicefsm.flow import Ask, Echo, FlowDefinitionError, FlowProblem, Hangup, Say, State, VoiceFlow, YesNo
from voicefsm.flow.checks import check_flow
from voicefsm.flow.loader import load_flow

SHIPPED = ("flows/booking.py", "flows/ivr_menu.py", "flows/survey.py", "flows/echo.py", "flows/reminder.py")


class Appointment(BaseModel):
    day: dt.date | None = None
    name: str | None = None


def problems_of(error: pytest.ExceptionInfo[FlowDefinitionError]) -> list[FlowProblem]:
    return list(error.value.problems)


def only(error: pytest.ExceptionInfo[FlowDefinitionError]) -> FlowProblem:
    (problem,) = error.value.problems
    return problem


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_flows_validate(path: str) -> None:
    flow = load_flow(path)
    assert check_flow(flow) == []


def test_a_listening_state_without_a_no_input_exit_is_rejected_with_state_event_line_and_fix() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            slots_model = Appointment
            ask_day = Ask("Which day?", slot="day", initial=True)  # line under test
            booked = Hangup("Booked.")
            filled = ask_day.to(booked)
            no_match = ask_day.to(booked)

    problem = only(error)
    line = next(
        n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "line under test" in text
    )
    assert (problem.flow, problem.state, problem.event, problem.line) == (
        "Broken",
        "ask_day",
        "no_input",
        line,
    )
    assert problem.path == __file__
    assert str(problem) == (
        f"{__file__}:{line}: Broken.ask_day can wait forever: no transition on no_input. "
        "Fix: add `no_input = ask_day.to(booked)` "
        "(or append `| ask_day.to(...)` to your `no_input = ...` line)"
    )


def test_an_unreachable_state_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            greet = Say("Hi.", initial=True)
            bye = Hangup("Bye.")
            orphan = Say("Nobody hears me.")
            spoken = greet.to(bye) | orphan.to(bye)

    problem = only(error)
    assert problem.state == "orphan"
    assert "is unreachable: no path leads to it from the initial state greet" in str(problem)


def test_a_template_naming_a_missing_slot_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            slots_model = Appointment
            greet = Say("Hello {nmae}, see you {day:%A}.", initial=True)
            bye = Hangup("Bye {caller}.")
            spoken = greet.to(bye)

    problem = only(error)
    assert problem.state == "greet"
    assert str(problem).endswith(
        "Broken.greet's prompt names {nmae}, which is neither a slot of Appointment (day and name) "
        "nor a built-in ({caller}, {reason} or {error}). Fix: did you mean {name}?"
    )


def test_an_unbounded_retry_loop_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            slots_model = Appointment
            ask_day = Ask("Which day?", slot="day", initial=True)
            hello = Say("Are you still there?")
            booked = Hangup("Booked.")
            filled = ask_day.to(booked)
            no_input = ask_day.to(hello)
            spoken = hello.to(ask_day)
            no_match = ask_day.to(booked)

    problem = only(error)
    assert problem.state == "ask_day"
    assert "is in a loop that no caller input breaks: ask_day -no_input-> hello -spoken-> ask_day" in str(
        problem
    )
    assert "retries belong in Ask(retries=N)" in problem.fix


def test_a_self_loop_on_no_match_is_an_unbounded_retry_too() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            confirm = Ask("Yes or no?", expect=YesNo(), initial=True)
            done = Hangup("Done.")
            filled = confirm.to(done)
            no_input = confirm.to(done)
            no_match = confirm.to(confirm)

    assert only(error).message.startswith(
        "is in a loop that no caller input breaks: confirm -no_match-> confirm"
    )


def test_a_loop_through_caller_input_is_fine() -> None:
    class Menu(VoiceFlow):
        menu = Ask("Say again or done.", expect=YesNo(), initial=True)
        done = Hangup("Done.")
        filled = menu.to(done, cond="yes") | menu.to(menu)
        no_input = menu.to(done)
        no_match = menu.to(done)

    assert check_flow(Menu) == []


def test_guarded_only_exits_need_a_fallback() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            confirm = Ask("Yes or no?", expect=YesNo(), initial=True)
            done = Hangup("Done.")
            filled = confirm.to(done, cond="yes") | confirm.to(done, cond="no")
            no_input = confirm.to(done)
            no_match = confirm.to(done)

    problem = only(error)
    assert problem.event == "filled"
    assert "every transition on filled is guarded (yes or no)" in problem.message
    assert "unguarded fallback" in problem.fix


def test_event_typos_and_events_a_state_never_gets_are_rejected() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            greet = Say("Hi.", initial=True)
            bye = Hangup("Bye.")
            spokn = greet.to(bye)
            filled = greet.to(bye)

    messages = {(p.event, p.message) for p in problems_of(error)}
    assert ("spokn", "has a transition on 'spokn', an event nothing sends") in messages
    assert (
        "filled",
        "never receives 'filled': a say state only gets spoken, tts_error or disconnected",
    ) in messages
    assert ("spoken", "can wait forever: no transition on spoken") in messages
    typo = next(p for p in problems_of(error) if p.event == "spokn")
    assert typo.fix == "did you mean 'spoken'?"


def test_a_plain_state_with_guarded_routes_and_a_fallback_is_fine() -> None:
    class Route(VoiceFlow):
        greet = Say("One moment.", initial=True)
        route = State()
        vip = Hangup("Welcome back.")
        other = Hangup("Welcome.")
        spoken = greet.to(route)
        route.to(vip, cond="known")
        route.to(other)

        def known(self) -> bool:
            return self.caller == "+15550001234"

    assert check_flow(Route) == []


def test_slot_problems_are_reported() -> None:
    class NoDefault(BaseModel):
        day: dt.date

    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            slots_model = Appointment
            ask = Ask("Which day?", slot="dya", initial=True)
            bye = Hangup("Bye.")
            filled = ask.to(bye)
            no_input = ask.to(bye)
            no_match = ask.to(bye)

    problem = only(error)
    assert problem.message == "listens for slot 'dya', which Appointment does not have (day and name)"
    assert problem.fix == "did you mean 'day'?"

    with pytest.raises(FlowDefinitionError, match=r"fields without a default \(day\)"):

        class Required(VoiceFlow):
            slots_model = NoDefault
            greet = Say("Hi.", initial=True)
            bye = Hangup("Bye.")
            spoken = greet.to(bye)


def test_an_ask_must_say_what_it_expects() -> None:
    with pytest.raises(FlowDefinitionError, match="does not say what it expects"):

        class Broken(VoiceFlow):
            ask = Ask("Well?", initial=True)
            bye = Hangup("Bye.")
            filled = ask.to(bye)
            no_input = ask.to(bye)
            no_match = ask.to(bye)


def test_a_plain_state_must_move_on_at_once() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            greet = Say("Hi.", initial=True)
            route = State()
            bye = Hangup("Bye.")
            spoken = greet.to(route)
            route.to(bye, cond="lucky")

            def lucky(self) -> bool:
                return False

    assert only(error).state == "route"
    assert "a plain State waits for nothing" in only(error).message


def test_disconnected_must_lead_to_a_final_state() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            greet = Say("Hi.", initial=True)
            again = Say("Hello?")
            bye = Hangup("Bye.")
            spoken = greet.to(bye) | again.to(bye)
            disconnected = greet.to(again)

    assert "after a hang-up nobody is listening" in only(error).message


def test_an_echo_state_needs_the_callers_audio() -> None:
    with pytest.raises(FlowDefinitionError, match="needs the caller's audio"):

        class Broken(VoiceFlow):
            uses_stt = True
            greet = Say("Echo.", initial=True)
            echo = Echo()
            spoken = greet.to(echo)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            slots_model = Appointment
            greet = Say("Hi {who}.", initial=True)
            ask = Ask("Day?", slot="day")
            orphan = Hangup("Never.")
            spoken = greet.to(ask)
            filled = ask.to(ask)

    states = sorted({(p.state, p.event) for p in problems_of(error)}, key=str)
    assert states == [("ask", "no_input"), ("ask", "no_match"), ("greet", None), ("orphan", None)]
    assert str(error.value).startswith("4 problems:\n  ")


def test_names_that_clash_with_voiceflow_attributes_are_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="named like VoiceFlow's own attribute 'slots'"):

        class Broken(VoiceFlow):
            slots = Say("Hi.", initial=True)
            bye = Hangup("Bye.")
            spoken = slots.to(bye)


def test_guard_and_callback_names_must_exist() -> None:
    with pytest.raises(FlowDefinitionError) as error:

        class Broken(VoiceFlow):
            ask = Ask("Shall I?", expect=YesNo(), initial=True)
            done = Hangup("Done.")
            filled = ask.to(done, cond="ys and not busy") | ask.to(done, on="sav")
            no_input = ask.to(done)
            no_match = ask.to(done)

            def save(self) -> None:
                pass

    found = {(p.state, p.message.split("'")[2], p.fix) for p in problems_of(error)}
    assert found == {
        ("ask", "ys", "did you mean 'yes'?"),
        ("ask", "busy", "define `def busy(self, ...)` on the flow"),
        ("ask", "sav", "did you mean 'save'?"),
    }
    assert any(
        str(p).endswith(
            "Broken.ask's transition on filled names 'ys', which the flow does not define. "
            "Fix: did you mean 'yes'?"
        )
        for p in problems_of(error)
    )
