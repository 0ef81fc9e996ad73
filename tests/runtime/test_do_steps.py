"""Backend steps (Do): async and sync bodies, results, failure, timeout, filler timing and hang-ups,
all on the virtual clock of the test line (no real waiting)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import ClassVar

import pytest
from pydantic import BaseModel

from voicefsm.flow import Do, FlowDefinitionError, Hangup, Result, Say, StepStub, VoiceFlow
from voicefsm.testing.line import FlowLine


class Times(BaseModel):
    answer: str | None = None
    seconds: float | None = None
    nearest: str | None = None


class AsyncCheck(VoiceFlow):
    """An async step with two results and a slot value."""

    slots_model = Times
    greet = Say("Let me check.", initial=True)
    check = Do("check_time", results=["available", "taken"])
    free = Hangup("It is free. Goodbye!")
    busy = Hangup("It is taken; the nearest is {nearest}. Goodbye!")
    sorry = Hangup("Sorry: {error}. Goodbye!")
    slow = Hangup("That took too long. Goodbye!")
    spoken = greet.to(check)
    available = check.to(free)
    taken = check.to(busy)
    failure = check.to(sorry)
    timed_out = check.to(slow)

    answer_with: object = "available"

    async def check_time(self) -> object:
        await asyncio.sleep(0)  # a real await on the loop
        if isinstance(self.answer_with, Exception):
            raise self.answer_with
        return self.answer_with


def check_answering(value: object) -> AsyncCheck:
    flow = AsyncCheck()
    flow.answer_with = value
    return flow


async def run(flow: type[VoiceFlow] | VoiceFlow, **options: object) -> FlowLine:
    async with FlowLine(flow, **options) as line:  # type: ignore[arg-type]
        await line.ended()
    return line


async def test_an_async_step_moves_on_by_the_result_it_returns() -> None:
    line = await run(check_answering("available"))
    line.assert_path("greet", "check", "free")
    assert line.transitions[2] == ("check", "available", "free")


async def test_a_result_object_stores_slots_before_the_event() -> None:
    line = await run(check_answering(Result("taken", nearest="ten thirty")))
    line.assert_path("greet", "check", "busy")
    line.assert_said("the nearest is ten thirty")
    assert line.slots == {"nearest": "ten thirty"}


async def test_an_exception_is_failure_and_its_text_is_error_in_the_next_prompt() -> None:
    line = await run(check_answering(RuntimeError("the calendar is down")))
    line.assert_path("greet", "check", "sorry")
    line.assert_said("Sorry: the calendar is down. Goodbye!", exact=True)
    assert any(kind == "step" and "the calendar is down" in message for kind, message in line.errors)


async def test_returning_something_that_is_not_a_result_is_a_failure_naming_the_results() -> None:
    line = await run(check_answering("maybe"))
    line.assert_path("greet", "check", "sorry")
    line.assert_said("must return one of available, taken")


def make_slow_flow(
    *, filler_after_s: float = 1.0, filler_min_s: float = 3.0, timeout_s: float = 10.0
) -> type:
    class Slow(VoiceFlow):
        greet = Say("Hello.", initial=True)
        check = Do(
            "look_up",
            filler="One moment while I check the calendar.",
            filler_after_s=filler_after_s,
            filler_min_s=filler_min_s,
            timeout_s=timeout_s,
        )
        done_ = Hangup("Done. Goodbye!")
        slow = Hangup("Too slow. Goodbye!")
        spoken = greet.to(check)
        done = check.to(done_)
        timed_out = check.to(slow)

        async def look_up(self) -> None:
            raise AssertionError("stubbed in these tests")

    return Slow


async def test_a_fast_step_gets_no_filler_and_no_added_wait() -> None:
    flow = make_slow_flow()
    line = await run(flow, stubs={"check": StepStub(delay_s=0.5)})
    line.assert_path("greet", "check", "done_")
    assert "One moment while I check the calendar." not in line.agent_said
    step_end = next(t for t in line.turns if t.text == "Done. Goodbye!").start_s
    greet_end = line.turns[0].end_s
    assert step_end - greet_end == pytest.approx(0.5, abs=0.01)


async def test_a_slow_step_gets_the_filler_after_the_delay_and_waits_for_its_minimum() -> None:
    """VoiceXML's fetchaudiodelay/fetchaudiominimum: filler at 1 s, outcome at max(2.5, 1 + 3) = 4 s."""
    flow = make_slow_flow(filler_after_s=1.0, filler_min_s=3.0)
    started = time.perf_counter()
    line = await run(flow, stubs={"check": StepStub(delay_s=2.5)})
    assert time.perf_counter() - started < 2.0  # simulated seconds cost no real ones
    line.assert_path("greet", "check", "done_")
    greet_end = line.turns[0].end_s
    filler = next(t for t in line.turns if t.text.startswith("One moment"))
    goodbye = next(t for t in line.turns if t.text == "Done. Goodbye!")
    assert filler.start_s - greet_end == pytest.approx(1.0, abs=0.01)
    assert not filler.interrupted
    assert goodbye.start_s - greet_end == pytest.approx(4.0, abs=0.05)


async def test_a_long_filler_is_never_clipped_by_the_result() -> None:
    flow = make_slow_flow(filler_after_s=0.2, filler_min_s=0.0)
    line = await run(flow, stubs={"check": StepStub(delay_s=0.3)})
    filler = next(t for t in line.turns if t.text.startswith("One moment"))
    goodbye = next(t for t in line.turns if t.text == "Done. Goodbye!")
    assert not filler.interrupted
    assert goodbye.start_s >= filler.end_s


async def test_a_step_past_its_timeout_is_timed_out_on_the_virtual_clock() -> None:
    flow = make_slow_flow(timeout_s=5.0, filler_min_s=1.0)
    started = time.perf_counter()
    line = await run(flow, stubs={"check": StepStub(hang=True)})
    assert time.perf_counter() - started < 2.0
    line.assert_path("greet", "check", "slow")
    slow = next(t for t in line.turns if t.text == "Too slow. Goodbye!")
    assert slow.start_s - line.turns[0].end_s == pytest.approx(5.0, abs=0.3)


async def test_a_stub_can_fail_a_step_by_state_or_method_name() -> None:
    for key in ("check", "check_time"):
        line = await run(AsyncCheck, stubs={key: StepStub(error="no answer from the calendar")})
        line.assert_path("greet", "check", "sorry")
        line.assert_said("Sorry: no answer from the calendar.")


async def test_caller_speech_and_keys_during_a_step_are_ignored() -> None:
    flow = make_slow_flow(filler_after_s=1.0, filler_min_s=1.0)
    async with FlowLine(flow, stubs={"check": StepStub(delay_s=3.0)}) as line:
        await line.speaking("One moment")
        line.say("hello? anyone there?")
        line.press("5")
        await line.ended()
    line.assert_path("greet", "check", "done_")
    filler = next(t for t in line.turns if t.text.startswith("One moment"))
    assert not filler.interrupted


class SyncSteps(VoiceFlow):
    """A plain `def` step runs on the step pool, off the event loop."""

    slots_model = Times
    greet = Say("Hello.", initial=True)
    check = Do("look_up", slot="answer")
    told = Hangup("The answer is {answer}.")
    spoken = greet.to(check)
    done = check.to(told)

    threads: ClassVar[list[str]] = []

    def look_up(self) -> str:
        type(self).threads.append(threading.current_thread().name)
        time.sleep(0.05)  # real blocking work: fine in a pool thread
        return "forty two"


async def test_a_sync_step_runs_in_a_pool_thread_and_its_value_fills_the_slot() -> None:
    loop_thread = threading.current_thread().name
    line = await run(SyncSteps)
    line.assert_path("greet", "check", "told")
    line.assert_said("The answer is forty two.", exact=True)
    assert SyncSteps.threads and SyncSteps.threads[-1] != loop_thread
    assert SyncSteps.threads[-1].startswith("voicefsm-step")


class Booking(BaseModel):
    booked: bool | None = None


class Write(VoiceFlow):
    slots_model = Booking
    greet = Say("Booking it now.", initial=True)
    write = Do("book", slot="booked", on_hangup="finish", finish_s=5.0, filler="One moment.")
    ok = Hangup("Booked.")
    spoken = greet.to(write)
    done = write.to(ok)

    async def book(self) -> bool:
        raise AssertionError("stubbed")


async def test_a_hang_up_cancels_a_step_by_default() -> None:
    class Cancelled(VoiceFlow):
        slots_model = Booking
        greet = Say("Hi.", initial=True)
        write = Do("book", slot="booked")
        ok = Hangup("Booked.")
        spoken = greet.to(write)
        done = write.to(ok)

        async def book(self) -> bool:
            raise AssertionError("stubbed")

    async with FlowLine(Cancelled, stubs={"write": StepStub(result=True, delay_s=2.0)}) as line:
        await line.until(lambda: line.state == "write", "the step to start")
        line.hang_up()
        result = await line.ended()
    assert result.outcome == "hung_up"
    assert result.slots["booked"] is None  # cancelled: never stored
    assert "Booked." not in line.agent_said


async def test_a_step_marked_finish_completes_after_a_hang_up_and_speaks_nothing() -> None:
    async with FlowLine(Write, stubs={"write": StepStub(result=True, delay_s=2.0)}) as line:
        await line.until(lambda: line.state == "write", "the step to start")
        line.hang_up()
        result = await line.ended()
    assert result.outcome == "hung_up"
    assert result.slots["booked"] is True  # the write finished and was recorded
    assert line.slots == {"booked": True}
    assert "Booked." not in line.agent_said


async def test_a_finishing_step_is_still_cut_off_after_finish_s() -> None:
    async with FlowLine(Write, stubs={"write": StepStub(result=True, delay_s=60.0)}) as line:
        await line.until(lambda: line.state == "write", "the step to start")
        line.hang_up()
        result = await line.ended()
    assert result.outcome == "hung_up"
    assert result.slots["booked"] is None


# -- static checks ------------------------------------------------------------------------------


def test_a_named_result_without_an_exit_is_reported_with_the_fix() -> None:
    with pytest.raises(FlowDefinitionError) as info:

        class Missing(VoiceFlow):
            greet = Say("Hi.", initial=True)
            check = Do("check_time", results=["available", "taken"])
            yes = Hangup("Free.")
            spoken = greet.to(check)
            available = check.to(yes)

            async def check_time(self) -> str:
                return "available"

    text = str(info.value)
    assert "Missing.check can wait forever: no transition on taken" in text
    assert "taken = check.to(next_state)" in text


def test_failure_and_timed_out_default_to_the_apology() -> None:
    class Defaults(VoiceFlow):
        greet = Say("Hi.", initial=True)
        check = Do("look")
        ok = Hangup("Fine.")
        spoken = greet.to(check)
        done = check.to(ok)

        def look(self) -> None:
            return None

    edges = {(s, e, t) for s, e, t in _edges(Defaults)}
    assert ("check", "failure", "failed") in edges
    assert ("check", "timed_out", "failed") in edges


def _edges(flow: type[VoiceFlow]) -> list[tuple[str, str, str]]:
    from voicefsm.flow.checks import edges_of

    return [(e.source.id, ev, e.target.id) for e in edges_of(flow) if e.target is not None for ev in e.events]


def test_a_step_naming_a_missing_method_or_slot_is_reported() -> None:
    with pytest.raises(FlowDefinitionError) as info:

        class Typo(VoiceFlow):
            slots_model = Times
            greet = Say("Hi.", initial=True)
            check = Do("chek_time", slot="anser", timeout_s=0)
            ok = Hangup("Fine.")
            spoken = greet.to(check)
            done = check.to(ok)

            async def check_time(self) -> None:
                return None

    text = str(info.value)
    assert "runs 'chek_time', but the flow does not define it" in text
    assert "did you mean 'check_time'?" in text
    assert "stores its result in slot 'anser'" in text
    assert "has timeout_s=0" in text
