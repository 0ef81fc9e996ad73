"""Call limits: a flow that loops through legal states for ever is ended politely by the loop guard."""

from __future__ import annotations

import time

import pytest

from voicefsm.flow import Ask, Do, FlowDefinitionError, FlowSpec, Hangup, Say, StepStub, VoiceFlow, YesNo
from voicefsm.flow.chart import LIMIT_GOODBYE
from voicefsm.testing.line import FlowLine


class Poller(VoiceFlow):
    """Polls a backend that never says it is ready: legal states, round and round."""

    max_state_entries = 30
    greet = Say("Let me see.", initial=True)
    poll = Do("is_ready", results=["ready", "not_yet"])
    wait = Say("Still checking.")
    done_ = Hangup("Ready. Goodbye!")
    spoken = greet.to(poll) | wait.to(poll)
    ready = poll.to(done_)
    not_yet = poll.to(wait)

    async def is_ready(self) -> str:
        return "not_yet"


async def test_a_flow_that_loops_for_ever_is_ended_by_the_loop_guard_with_a_goodbye() -> None:
    started = time.perf_counter()
    async with FlowLine(Poller) as line:
        result = await line.ended()
    assert time.perf_counter() - started < 5
    assert result.outcome == "limit" and result.final_state == "limit"
    assert len(line.path) == 32  # 30 entries allowed; the 31st crosses the limit, then `limit`
    assert line.transitions[-1][1:] == ("limit_reached", "limit")
    assert line.agent_said[-1] == LIMIT_GOODBYE
    assert any(kind == "limit" and "max_state_entries = 30" in message for kind, message in line.errors)


class Repeater(VoiceFlow):
    max_same_state = 3
    ask = Ask("Again?", expect=YesNo(), initial=True)
    bye = Hangup("Bye.")
    filled = ask.to.itself()
    no_input = ask.to(bye)
    no_match = ask.to(bye)


async def test_the_same_state_too_many_times_in_a_row_is_ended_politely() -> None:
    async with FlowLine(Repeater) as line:
        for _ in range(3):
            await line.answer("yes")
        result = await line.ended()
    assert line.path == ["ask", "ask", "ask", "ask", "limit"]
    assert result.outcome == "limit"
    assert any("entered ask 4 times in a row (max_same_state = 3)" in message for _, message in line.errors)


class Short(VoiceFlow):
    max_duration_s = 30.0
    greet = Say("Hello.", initial=True)
    work = Do("slow", timeout_s=200.0)
    ok = Hangup("Done.")
    spoken = greet.to(work)
    done = work.to(ok)

    async def slow(self) -> None:
        return None


async def test_the_longest_call_ends_on_the_runtime_clock_even_inside_a_step() -> None:
    async with FlowLine(Short, stubs={"work": StepStub(delay_s=100.0)}) as line:
        result = await line.ended()
    assert result.outcome == "limit"
    assert line.transitions[-1] == ("work", "limit_reached", "limit")
    goodbye = line.turns[-1]
    assert goodbye.text == LIMIT_GOODBYE and goodbye.start_s == pytest.approx(30.0, abs=0.5)


class OwnLimit(VoiceFlow):
    """A flow may handle limit_reached itself, like any event."""

    max_same_state = 2
    ask = Ask("Again?", expect=YesNo(), initial=True)
    agent = Hangup("Let me pass you to a colleague.", outcome="handed_over")
    bye = Hangup("Bye.")
    filled = ask.to.itself()
    no_input = ask.to(bye)
    no_match = ask.to(bye)
    limit_reached = ask.to(agent)


async def test_a_flow_can_handle_limit_reached_and_set_its_goodbye() -> None:
    assert "limit_reached" in FlowSpec.of(OwnLimit).state("ask").receives
    async with FlowLine(OwnLimit) as line:
        await line.answer("yes")
        await line.answer("no")
        result = await line.ended()
    assert result.outcome == "handed_over"
    assert line.transitions[-1] == ("ask", "limit_reached", "agent")


def test_a_limit_that_is_not_a_positive_number_is_reported() -> None:
    with pytest.raises(FlowDefinitionError, match=r"sets max_same_state = 0, which is not a positive number"):

        class Bad(VoiceFlow):
            max_same_state = 0
            greet = Say("Hi.", initial=True)
            bye = Hangup("Bye.")
            spoken = greet.to(bye)
