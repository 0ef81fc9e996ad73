"""The public test kit through its pytest fixtures: a flow author's test, as they would write it."""

from __future__ import annotations

import re
import subprocess
import sys
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
    assert line.path == ["greet", "ask_day", "ask_time", "ask_name", "confirm", "check", "book", "booked"]
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


async def test_the_assertions_pass_on_a_booking_and_read_like_help_when_wrong() -> None:
    async with FlowLine(Booking) as line:
        await line.answer("next Tuesday")
        with pytest.raises(AssertionError, match=r"has not ended \(await line.ended\(\) first\)"):
            line.assert_outcome("completed")
        await line.answer("half past ten")
        await line.answer("Ada Lovelace")
        await line.keys("1")
        await line.ended()
    line.assert_outcome("completed")
    line.assert_state("booked")
    line.assert_path("greet", "ask_day", "ask_time", "ask_name", "confirm", "check", "book", "booked")
    line.assert_slots(day="2024-06-11", time="10:30", name="Ada Lovelace")
    assert line.assert_said(re.compile(r"Tuesday at 10:30")).startswith("Ada Lovelace, that's")
    line.assert_said("what time on tuesday")

    with pytest.raises(AssertionError) as wrong_path:
        line.assert_path("greet", "ask_day", "ask_name")
    message = str(wrong_path.value)
    assert "expected the path greet -> ask_day -> ask_name\n" in message
    assert "(step 3: expected 'ask_name', entered 'ask_time')" in message
    assert "  caller: next Tuesday" in message  # the transcript so far

    with pytest.raises(AssertionError, match=r"the outcome 'gave_up', got 'completed' \(final state"):
        line.assert_outcome("gave_up")
    with pytest.raises(AssertionError, match=r"slot 'phone' was never filled \(filled: day=.*time="):
        line.assert_slots(phone="555")
    with pytest.raises(AssertionError, match=r"slot 'time': expected '11:00', got datetime.time\(10, 30\)"):
        line.assert_slots(time="11:00")
    with pytest.raises(AssertionError, match=r"never said exactly 'what time on tuesday'\npath: greet"):
        line.assert_said("what time on tuesday", exact=True)


async def test_silence_is_the_scenario_word_for_staying_silent() -> None:
    async with FlowLine(Booking) as line:
        assert await line.silence() == "ask_day"
        line.hang_up()
        await line.ended()
    line.assert_said(re.compile(r"^Sorry, I didn't hear anything"))
    line.assert_outcome("hung_up")


def test_importing_the_plugin_loads_nothing_of_the_runtime() -> None:
    # Every pytest run imports the plugin once it is installed: it must cost next to nothing.
    code = "import sys, voicefsm.testing.plugin; print(sorted(m for m in sys.modules if m[:8] == 'voicefsm'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['voicefsm', 'voicefsm.testing', 'voicefsm.testing.plugin']"


def test_every_public_name_resolves() -> None:
    import voicefsm.testing as kit

    assert all(getattr(kit, name) is not None for name in kit.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        kit.Nope  # noqa: B018


async def test_two_lines_on_one_loop_share_a_clock_or_are_told_to() -> None:
    from voicefsm.runtime.clock import VirtualClock

    clock = VirtualClock()
    async with FlowLine(Booking, clock=clock) as first, FlowLine(Booking, clock=clock) as second:
        results = [await first.ended(), await second.ended()]  # two silent callers, one timeline
    assert [result.outcome for result in results] == ["gave_up", "gave_up"]
    clock.close()

    one, other = FlowLine(Booking, wait_s=1.0), FlowLine(Booking, wait_s=1.0)  # a clock each
    failures = []
    async with one, other:
        for line in (one, other):
            try:
                await line.ended()
            except AssertionError as exc:
                failures.append(str(exc))
            line.hang_up()
    assert any("two VirtualClocks are running on one event loop" in failure for failure in failures)
