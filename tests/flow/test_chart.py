"""VoiceFlow as a class: the exits every flow gets, the async engine, loud failures."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import BaseModel, field_validator
from statemachine.engines.async_ import AsyncEngine

from voicefsm.flow import Ask, FlowDefinitionError, Hangup, Say, State, UnknownEventError, VoiceFlow, YesNo
from voicefsm.flow.checks import edges_of
from voicefsm.flow.errors import SlotRejected
from voicefsm.flow.slots import assign_slot, render_template, template_fields


class Confirm(VoiceFlow):
    """One yes/no question."""

    greet = Say("Hi.", initial=True)
    ask = Ask("Shall I?", expect=YesNo())
    done = Hangup("Done.")
    nope = Hangup("Okay.")
    spoken = greet.to(ask)
    filled = ask.to(done, cond="yes") | ask.to(nope)
    no_input = ask.to(nope)
    no_match = ask.to(nope)
    disconnected = ask.to(nope)  # the flow's own choice for this state wins over the default


def exits(flow: type[VoiceFlow], state: str) -> dict[str, str]:
    edges = [edge for edge in edges_of(flow) if edge.source.id == state]
    return {event: edge.target.id for edge in edges for event in edge.events if edge.target is not None}


def test_default_exits_are_real_states_and_transitions() -> None:
    assert Confirm.hung_up.final and Confirm.failed.final
    assert Confirm._default_states == {"hung_up", "failed", "limit"}
    assert exits(Confirm, "greet") == {
        "spoken": "ask",
        "disconnected": "hung_up",
        "error.execution": "failed",
        "limit_reached": "limit",
        "tts_error": "failed",
    }
    assert exits(Confirm, "ask")["disconnected"] == "nope"
    assert exits(Confirm, "ask")["stt_error"] == "failed"
    defaults = [edge for edge in edges_of(Confirm) if edge.default]
    assert {edge.target.id for edge in defaults} == {"hung_up", "failed", "limit"}
    assert Confirm.failed.prompt == "Sorry, something went wrong on our side. Please call again later."
    assert Confirm.failed.outcome == "error"
    assert Confirm.hung_up.prompt is None


def test_a_flow_can_provide_its_own_failed_state_and_apology() -> None:
    class Polite(VoiceFlow):
        apology = "Oops, our fault. Bye."
        greet = Say("Hi.", initial=True)
        bye = Hangup("Bye.")
        spoken = greet.to(bye)

    assert Polite.failed.prompt == "Oops, our fault. Bye."

    class OwnFailed(VoiceFlow):
        greet = Say("Hi.", initial=True)
        bye = Hangup("Bye.")
        failed = Hangup("We are having trouble; please try later.", outcome="error")
        spoken = greet.to(bye)
        error_execution = greet.to(failed)

    assert exits(OwnFailed, "greet")["tts_error"] == "failed"
    assert OwnFailed.failed.prompt == "We are having trouble; please try later."
    assert "failed" not in OwnFailed._default_states


async def test_flows_run_on_the_async_engine_even_without_async_code() -> None:
    flow = Confirm()
    assert isinstance(flow._engine, AsyncEngine)
    await flow.activate_initial_state()
    await flow.send("spoken")
    await flow.send("filled", value=True, slot=None, text="yes", via="speech")
    assert flow.current.id == "done"
    assert [step.target for step in flow.steps] == ["ask", "done"]


async def test_each_chart_starts_where_it_was_told_after_others_of_its_class() -> None:
    """The activation's transitions are built once per class and start state, never mixed up."""
    first, elsewhere, second = Confirm(), Confirm(start_value="ask"), Confirm()
    for flow in (first, elsewhere, second):
        await flow.activate_initial_state()
    assert [flow.current.id for flow in (first, elsewhere, second)] == ["greet", "ask", "greet"]
    await first.send("spoken")
    assert (first.current.id, second.current.id) == ("ask", "greet")  # one chart's step is its own
    assert [step.target for step in first.steps] == ["ask"] and second.steps == []


async def test_the_yes_and_no_guards_read_the_filled_value() -> None:
    flow = Confirm(start_value="ask")
    await flow.activate_initial_state()
    await flow.send("filled", value=False)
    assert flow.current.id == "nope"


async def test_unknown_events_raise_with_the_declared_ones() -> None:
    flow = Confirm()
    await flow.activate_initial_state()
    with pytest.raises(UnknownEventError) as raised:
        await flow.send("fillde")
    message = str(raised.value)
    assert "Confirm has no event 'fillde'; it declares disconnected, error.execution, filled" in message
    assert flow.current.id == "greet"


async def test_flow_code_that_raises_makes_send_raise_and_leaves_the_chart_where_it_was() -> None:
    class Raising(VoiceFlow):
        greet = Say("Hi.", initial=True)
        middle = Say("Middle.")
        bye = Hangup("Bye.")
        spoken = greet.to(middle) | middle.to(bye)

        def on_enter_middle(self) -> None:
            raise LookupError("no such customer")

    flow = Raising()
    await flow.activate_initial_state()
    with pytest.raises(LookupError, match="no such customer"):
        await flow.send("spoken")
    assert flow.current.id == "greet"
    await flow.send("error.execution", error=LookupError("no such customer"))
    assert flow.current.id == "failed"
    assert flow.steps[-1].error is not None


def test_subclassing_a_concrete_flow_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="subclasses the concrete flow Confirm"):

        class More(Confirm):
            extra = Say("More.")


def test_compound_states_are_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="compound or parallel state"):

        class Nested(VoiceFlow):
            class inner(State.Compound):
                a = State(initial=True)
                b = State(final=True)
                go = a.to(b)

            done = Hangup("Bye.")
            done_state_inner = inner.to(done)


def test_python_statemachine_definition_errors_name_the_flow_and_file() -> None:
    with pytest.raises(FlowDefinitionError) as raised:

        class TwoStarts(VoiceFlow):
            one = Say("One.", initial=True)
            two = Say("Two.", initial=True)
            bye = Hangup("Bye.")
            spoken = one.to(bye) | two.to(bye)

    (problem,) = raised.value.problems
    assert problem.flow == "TwoStarts"
    assert problem.path == __file__
    assert "rejected it: There should be one and only one initial state" in problem.message


# -- slots and templates ------------------------------------------------------------------------


class Visit(BaseModel):
    day: dt.date | None = None
    party: int | None = None

    @field_validator("party")
    @classmethod
    def _small(cls, party: int | None) -> int | None:
        if party is not None and party > 8:
            raise ValueError("we can seat at most 8")
        return party


def test_slot_assignment_validates_and_gives_the_validators_words() -> None:
    visit = Visit()
    assert assign_slot(visit, "party", "4") == 4
    with pytest.raises(SlotRejected) as rejected:
        assign_slot(visit, "party", 12)
    assert rejected.value.reason == "we can seat at most 8"
    assert visit.party == 4
    with pytest.raises(SlotRejected, match="valid date"):
        assign_slot(visit, "day", "someday")


def test_templates() -> None:
    assert template_fields("{day:%A} for {party} at {day.year} {{literal}}") == ("day", "party")
    with pytest.raises(ValueError, match="positional"):
        template_fields("Hello {}")
    values = {"day": dt.date(2024, 6, 4), "party": None}
    assert render_template("{day:%A}, party of {party:d} people.", values) == "Tuesday, party of people."
