"""Answering-machine detection reaches a flow as ``machine_answered``, only where the flow asks for it."""

from __future__ import annotations

from voicefsm.core.events import MachineDetected
from voicefsm.flow import Ask, FlowSpec, Hangup, Say, VoiceFlow, YesNo, check_flow
from voicefsm.testing.line import FlowLine


class Plain(VoiceFlow):
    """No transition on machine_answered: a verdict changes nothing."""

    greet = Say("Hello.", initial=True)
    ask = Ask("Is this a good time? Say yes or no.", expect=YesNo())
    bye = Hangup("Goodbye.")
    spoken = greet.to(ask)
    filled = ask.to(bye)
    no_input = ask.to(bye)
    no_match = ask.to(bye)


class Leaves(VoiceFlow):
    """A voicemail from the question only (not from the greeting)."""

    greet = Say("Hello.", initial=True)
    ask = Ask("Is this a good time? Say yes or no.", expect=YesNo())
    bye = Hangup("Goodbye.")
    voicemail = Hangup("Sorry we missed you. Goodbye.", outcome="voicemail")
    spoken = greet.to(ask)
    filled = ask.to(bye)
    no_input = ask.to(bye)
    no_match = ask.to(bye)
    machine_answered = ask.to(voicemail, cond="after_the_beep")

    def after_the_beep(self, answered_by: str) -> bool:
        """Guard: the payload is the verdict."""
        return answered_by == "machine_end_beep"


def test_the_static_checks_accept_flows_with_and_without_it() -> None:
    assert check_flow(Plain) == []
    assert check_flow(Leaves) == []
    assert "machine_answered" in FlowSpec.of(Leaves).state("greet").receives
    assert "machine_answered" in FlowSpec.of(Leaves).events
    assert "machine_answered" not in FlowSpec.of(Plain).events


async def test_a_flow_without_the_event_goes_on_and_the_verdict_is_noted() -> None:
    async with FlowLine(Plain) as line:
        await line.next_listen()
        line.machine_answers("machine_end_beep")
        await line.answer("yes")
        result = await line.ended()
    assert result.outcome == "completed"
    assert line.path == ["greet", "ask", "bye"]
    assert line.errors == [("amd", "answering-machine detection: answered by machine_end_beep")]


async def test_a_machine_after_the_beep_gets_the_voicemail_with_the_verdict_as_payload() -> None:
    async with FlowLine(Leaves) as line:
        await line.next_listen()
        line.machine_answers("machine_end_beep")
        result = await line.ended()
    assert result.outcome == "voicemail"
    assert line.path == ["greet", "ask", "voicemail"]
    assert line.agent_said[-1] == "Sorry we missed you. Goodbye."


async def test_human_unknown_fax_and_machine_start_are_not_machines_for_the_flow() -> None:
    async with FlowLine(Leaves) as line:
        await line.next_listen()
        for verdict in ("human", "unknown", "fax", "machine_start"):
            line.machine_answers(verdict)
        await line.answer("yes")
        result = await line.ended()
    assert result.outcome == "completed"
    assert [kind for kind, _ in line.errors] == ["amd"] * 4


async def test_a_state_without_the_transition_and_a_guard_that_says_no_change_nothing() -> None:
    async with FlowLine(Leaves) as line:
        await line.until(lambda: line.state == "greet", "the greeting")
        line.machine_answers("machine_end_silence")  # greet has no transition on it
        await line.next_listen()
        line.machine_answers("machine_end_other")  # the guard wants the beep
        await line.answer("no")
        result = await line.ended()
    assert result.outcome == "completed"
    assert line.path == ["greet", "ask", "bye"]


def test_only_a_machine_whose_greeting_ended_counts() -> None:
    assert MachineDetected("machine_end_beep").machine
    assert MachineDetected("machine_end_other").machine
    assert not MachineDetected("machine_start").machine
    assert not MachineDetected("human").machine
