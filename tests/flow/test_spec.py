"""FlowSpec: a flow class as data, exportable as JSON and JSON Schema."""

from __future__ import annotations

import json

import pytest

from voicefsm.flow.loader import load_flow
from voicefsm.flow.spec import FlowSpec, TransitionSpec

Booking = load_flow("flows/booking.py")


def test_the_booking_spec_describes_states_expectations_timers_and_transitions() -> None:
    spec = FlowSpec.of(Booking)
    assert (spec.name, spec.initial, spec.path, spec.uses_stt) == (
        "Booking",
        "greet",
        "flows/booking.py",
        True,
    )
    assert [(s.id, s.kind) for s in spec.states] == [
        ("greet", "say"),
        ("ask_day", "ask"),
        ("ask_time", "ask"),
        ("ask_name", "ask"),
        ("confirm", "ask"),
        ("check", "do"),
        ("offer", "ask"),
        ("book", "do"),
        ("booked", "hangup"),
        ("unavailable", "hangup"),
        ("give_up", "hangup"),
        ("hung_up", "hangup"),
        ("failed", "hangup"),
        ("limit", "hangup"),
    ]
    ask_day = spec.state("ask_day")
    assert ask_day.slot == "day"
    assert ask_day.expect is not None and ask_day.expect.kind == "day"
    assert (ask_day.no_input_s, ask_day.retries, ask_day.barge_in, ask_day.keypad) == (6.0, 2, True, True)
    assert ask_day.reprompts == ["Sorry, {reason}. Which day would you like to come in?"]
    assert ask_day.receives == [
        "filled",
        "no_input",
        "no_match",
        "tts_error",
        "stt_error",
        "disconnected",
        "error.execution",
        "limit_reached",
        "machine_answered",
    ]
    confirm = spec.state("confirm")
    assert confirm.expect is not None and confirm.expect.params == {"yes_key": "1", "no_key": "2"}
    assert confirm.expect.keypad_max_digits == 1
    assert spec.state("give_up").outcome == "gave_up"
    assert spec.state("failed").default and not spec.state("booked").default
    assert (
        TransitionSpec(source="confirm", target="check", events=["filled"], guards=["yes"])
        in spec.transitions
    )
    assert (
        TransitionSpec(source="greet", target="hung_up", events=["disconnected"], default=True)
        in spec.transitions
    )
    assert spec.slots_schema["properties"]["day"]["anyOf"][0] == {"format": "date", "type": "string"}
    assert spec.events == ["disconnected", "error.execution", "failure", "filled", "free", "limit_reached",
                           "no_input", "no_match", "saved", "spoken", "stt_error", "taken", "timed_out",
                           "tts_error"]  # fmt: skip
    assert spec.limits == {
        "max_duration_s": Booking.max_duration_s,
        "max_state_entries": Booking.max_state_entries,
        "max_same_state": Booking.max_same_state,
    }


def test_the_spec_round_trips_through_json_and_has_a_schema() -> None:
    spec = FlowSpec.of(load_flow("flows/ivr_menu.py"))
    assert FlowSpec.model_validate_json(spec.model_dump_json()) == spec
    menu = spec.state("menu")
    assert menu.expect is not None
    assert menu.expect.params["keys"] == {"1": "billing", "2": "support", "3": "hours", "9": "repeat"}
    assert spec.state("billing").transfer_to == "+15550100001"
    schema = FlowSpec.model_json_schema()
    assert set(schema["required"]) >= {"name", "states", "transitions", "slots_schema"}
    json.dumps(schema)


def test_sms_and_echo_states_carry_their_settings() -> None:
    survey = FlowSpec.of(load_flow("flows/survey.py"))
    assert (
        survey.state("thanks").sms_body is not None and "{would_recommend}" in survey.state("thanks").sms_body
    )
    assert survey.state("thanks").sms_to is None
    echo = FlowSpec.of(load_flow("flows/echo.py"))
    assert echo.uses_stt is False
    assert echo.state("echo").max_s == 600.0


def test_asking_for_a_missing_state_names_the_states_there_are() -> None:
    with pytest.raises(KeyError, match="Booking has no state 'nope'; it has greet, ask_day"):
        FlowSpec.of(Booking).state("nope")
