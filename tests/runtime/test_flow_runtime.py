"""FlowRuntime mechanics: prompts, listening, timers, barge-in, keys, failures, endings.

Each test dials a small flow over the in-process line (tests/runtime/flow_harness.py): a real
Call, the real runtime, scripted speech, simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from flow_harness import FlowLine
from pydantic import BaseModel

from voicefsm.core.events import CallStarted
from voicefsm.flow import Ask, Digits, Echo, Hangup, Say, SendSms, State, Transfer, VoiceFlow, YesNo
from voicefsm.flow.errors import UnknownEventError
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.driver import run_call
from voicefsm.runtime.flow_runtime import FlowListener, FlowRuntime, RuntimeLimits, Turn
from voicefsm.runtime.session import CallSession, FlowRun
from voicefsm.telephony.recording import Failed, SmsSent, Transferred
from voicefsm.transports.memory import MemoryFarEnd


class Pin(BaseModel):
    pin: Annotated[str, Digits(4, 6, "#")] | None = None
    name: str | None = None


class PinCheck(VoiceFlow):
    """Collect a PIN by voice or keypad."""

    slots_model = Pin
    greet = Say("Welcome to the vault.", initial=True)
    ask = Ask(
        "Enter your PIN, then press hash.", slot="pin", retries=1, reprompt="Sorry, {reason}. Your PIN?"
    )
    done = Hangup("Thanks, PIN {pin} accepted.")
    quit = Hangup("Goodbye.", outcome="gave_up")
    spoken = greet.to(ask)
    filled = ask.to(done)
    no_input = ask.to(quit)
    no_match = ask.to(quit)


class Strict(VoiceFlow):
    """Prompts that cannot be interrupted."""

    notice = Say("This call is recorded for training.", initial=True, barge_in=False)
    ask = Ask("Do you agree? Say yes or no.", expect=YesNo(), barge_in=False)
    agreed = Hangup("Thank you.")
    declined = Hangup("Understood.")
    spoken = notice.to(ask)
    filled = ask.to(agreed, cond="yes") | ask.to(declined)
    no_input = ask.to(declined)
    no_match = ask.to(declined)


class Fragile(VoiceFlow):
    """Flow code that raises."""

    greet = Say("Hello.", initial=True)
    ask = Ask("Yes or no?", expect=YesNo())
    good = Hangup("Good.")
    other = Hangup("Fine.")
    spoken = greet.to(ask)
    filled = ask.to(good, cond="picky") | ask.to(other)
    no_input = ask.to(other)
    no_match = ask.to(other)

    def picky(self, value: object) -> bool:
        raise RuntimeError("the guard blew up")


class Decide(VoiceFlow):
    """A plain decision state between two questions."""

    slots_model = Pin
    ask = Ask("Your PIN?", slot="pin", initial=True)
    route = State()
    vip = Hangup("Welcome back, boss.")
    regular = Hangup("Welcome.")
    quit = Hangup("Bye.")
    filled = ask.to(route)
    no_input = ask.to(quit)
    no_match = ask.to(quit)
    route.to(vip, cond="is_boss")
    route.to(regular)

    def is_boss(self) -> bool:
        return self.slots.pin == "0000"


# -- prompts and listening ----------------------------------------------------------------------


async def test_a_keypad_answer_with_terminator_fills_the_slot() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        line.press("4122#")
        result = await line.ended()
    assert result.final_state == "done"
    assert result.outcome == "completed"
    assert result.slots["pin"] == "4122"
    assert line.agent_said[-1] == "Thanks, PIN 4122 accepted."
    assert ("pin", "4122") in line.slots_filled
    assert [t for t in line.turns if t.speaker == "caller"] == [
        Turn("caller", "4122#", line.turns[2].start_s, line.turns[2].end_s, "dtmf", False, "ask")
    ]


async def test_keys_end_after_the_inter_digit_pause_and_too_few_digits_reprompt() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        line.press("12")
        reprompt = await line.heard("Sorry")
        assert reprompt.text == "Sorry, that was 2 digits; I need at least 4. Your PIN?"
        line.press("987654")  # max length reached: no terminator needed
        result = await line.ended()
    assert result.slots["pin"] == "987654"
    assert line.path == ["greet", "ask", "done"]


async def test_speech_answers_are_parsed_by_the_slots_expectation() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        line.say("it's four one two two")
        result = await line.ended()
    assert result.slots["pin"] == "4122"
    assert line.stt.hints.phrases, "the Ask should have given the recognizer its phrases"
    assert line.stt.hints.open_vocabulary is False


async def test_silence_reprompts_then_sends_no_input_without_real_waiting() -> None:
    started = time.perf_counter()
    async with FlowLine(PinCheck) as line:
        result = await line.ended()
    assert time.perf_counter() - started < 2.0
    assert result.final_state == "quit"
    assert result.outcome == "gave_up"
    assert line.agent_said == [
        "Welcome to the vault.",
        "Enter your PIN, then press hash.",
        "Sorry, I didn't hear anything. Enter your PIN, then press hash.",
        "Goodbye.",
    ]
    assert line.transitions[-1] == ("ask", "no_input", "quit")
    # Two no-input periods of 6 s each, timed from the end of each prompt's playback.
    listening = [t for t in line.turns if t.speaker == "agent"][1:3]
    goodbye = line.turns[-1]
    assert goodbye.start_s - listening[1].end_s == pytest.approx(6.0)
    assert listening[1].start_s - listening[0].end_s == pytest.approx(6.0)


async def test_an_unusable_answer_reprompts_with_the_reason_then_sends_no_match() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        line.say("banana")
        assert (await line.heard("Sorry")).text == "Sorry, I didn't catch any digits. Your PIN?"
        line.say("apple")
        result = await line.ended()
    assert line.transitions[-1] == ("ask", "no_match", "quit")
    assert result.final_state == "quit"


async def test_speech_while_listening_restarts_the_no_input_timer() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        listening_since = line.clock.now()
        await line.clock.sleep(5.0)
        line.stt.on_recognizing("four")  # the caller starts talking at 5 s: not silent any more
        await line.clock.sleep(5.0)
        assert line.path == ["greet", "ask"], "no-input fired although the caller was talking"
        line.stt.on_committed("four one two two")
        result = await line.ended()
    assert result.final_state == "done"
    assert line.clock.now() - listening_since >= 10.0


async def test_a_plain_state_routes_with_an_eventless_transition() -> None:
    async with FlowLine(Decide) as line:
        await line.listening("ask")
        line.press("0000#")
        result = await line.ended()
    assert line.path == ["ask", "route", "vip"]
    assert result.final_state == "vip"


# -- barge-in -----------------------------------------------------------------------------------


async def test_caller_speech_interrupts_a_prompt_and_is_taken_as_the_answer() -> None:
    async with FlowLine(PinCheck) as line:
        await line.speaking("Enter your PIN")
        line.say("four one two two")
        result = await line.ended()
    assert result.slots["pin"] == "4122"
    interrupted = [turn for turn in line.turns if turn.interrupted]
    assert [turn.text for turn in interrupted] == ["Enter your PIN, then press hash."]
    assert line.clears >= 1, "barge-in must clear the caller's buffer"


async def test_a_key_interrupts_a_say_and_moves_on() -> None:
    async with FlowLine(PinCheck) as line:
        await line.speaking("Welcome")
        line.press("5")
        await line.listening("ask")
        assert line.transitions[1] == ("greet", "spoken", "ask")
        assert line.turns[0].interrupted
        line.press("1234#")
        result = await line.ended()
    assert result.slots["pin"] == "1234", "the key that interrupted the greeting must not be kept"


async def test_prompts_without_barge_in_ignore_speech_and_keys_while_they_play() -> None:
    async with FlowLine(Strict) as line:
        await line.speaking("This call is recorded")
        line.say("no no no")
        line.press("2")
        await line.speaking("Do you agree")
        line.say("no")
        await line.listening("ask")
        assert line.clears == 0
        line.say("yes")
        result = await line.ended()
    assert result.final_state == "agreed"
    assert not any(turn.interrupted for turn in line.turns)


# -- failures -----------------------------------------------------------------------------------


async def test_a_tts_failure_apologises_and_hangs_up() -> None:
    async with FlowLine(PinCheck) as line:
        line.tts.fail_next("quota exceeded")
        result = await line.ended()
    assert line.transitions[1:] == [("greet", "tts_error", "failed")]
    assert result.outcome == "error"
    assert line.agent_said == ["Sorry, something went wrong on our side. Please call again later."]
    assert ("tts", "could not speak in greet: scripted-tts: quota exceeded") in line.errors
    assert line.call.hangup_reason == "error"


async def test_a_missing_mark_becomes_tts_error_and_the_call_still_ends() -> None:
    limits = RuntimeLimits(mark_slack_s=0.05, mark_s_per_char=0.0)
    async with FlowLine(PinCheck, echo_marks=False, limits=limits) as line:
        result = await line.ended()
    assert line.transitions[1:] == [("greet", "tts_error", "failed")]
    assert result.final_state == "failed"
    assert line.call.is_disconnected


async def test_tts_dead_for_good_still_ends_the_call() -> None:
    async with FlowLine(PinCheck) as line:
        line.tts.fail_always = "account suspended"
        result = await line.ended()
    assert result.final_state == "failed"
    assert line.call.is_disconnected


async def test_an_stt_failure_while_listening_apologises() -> None:
    async with FlowLine(PinCheck) as line:
        await line.listening("ask")
        line.stt.fail("socket closed")
        result = await line.ended()
    assert line.transitions[-1] == ("ask", "stt_error", "failed")
    assert result.outcome == "error"


async def test_an_stt_failure_while_talking_is_delivered_when_the_flow_next_listens() -> None:
    async with FlowLine(PinCheck) as line:
        await line.speaking("Welcome")
        line.stt.fail("socket closed")
        result = await line.ended()
    assert line.path == ["greet", "ask", "failed"]
    assert line.transitions[-1] == ("ask", "stt_error", "failed")
    assert "Enter your PIN, then press hash." not in line.agent_said
    assert result.final_state == "failed"


async def test_an_exception_in_a_guard_is_logged_with_its_traceback_and_apologised_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FlowLine(Fragile) as line:
        await line.listening("ask")
        with caplog.at_level(logging.ERROR):
            line.say("yes")
            result = await line.ended()
    assert line.transitions[-1] == ("ask", "error.execution", "failed")
    assert result.outcome == "error"
    assert line.agent_said[-1].startswith("Sorry, something went wrong")
    logged = [record for record in caplog.records if "the guard blew up" in str(record.exc_info)]
    assert logged, "the flow's exception must be logged with its traceback"
    assert any(kind == "flow" and "the guard blew up" in message for kind, message in line.errors)


async def test_an_exception_entering_a_state_leaves_the_chart_before_it_and_apologises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Lookup(VoiceFlow):
        greet = Say("One moment.", initial=True)
        found = Hangup("Found you.")
        spoken = greet.to(found)

        def on_enter_found(self) -> None:
            raise KeyError("customer 42")

    async with FlowLine(Lookup) as line:
        result = await line.ended()
    assert line.transitions == [("", "start", "greet"), ("greet", "error.execution", "failed")]
    assert result.final_state == "failed"
    assert line.agent_said == [
        "One moment.",
        "Sorry, something went wrong on our side. Please call again later.",
    ]
    (record,) = [r for r in caplog.records if r.exc_info and "customer 42" in str(r.exc_info[1])]
    assert "Lookup raised on spoken in greet" in record.getMessage()


async def test_a_template_that_cannot_render_is_an_execution_error() -> None:
    class Model(BaseModel):
        count: str | None = None

    class BadFormat(VoiceFlow):
        slots_model = Model
        greet = Say("You have {count:d} messages.", initial=True)
        bye = Hangup("Bye.")
        spoken = greet.to(bye)

    async with FlowLine(BadFormat(slots=Model(count="three"))) as line:
        result = await line.ended()
    assert line.transitions[1:] == [("greet", "error.execution", "failed")]
    assert result.outcome == "error"


async def test_an_unset_slot_renders_as_nothing() -> None:
    async with FlowLine(PinCheck(start_value="done")) as line:
        await line.ended()
    assert line.agent_said == ["Thanks, PIN accepted."]


async def test_a_failing_listener_never_ends_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FlowListener):
        def on_turn(self, turn: Turn) -> None:
            raise ValueError("listener bug")

    async with FlowLine(PinCheck) as line:
        line.runtime.listeners = (Broken(), *line.runtime.listeners)
        await line.listening("ask")
        line.press("4122#")
        result = await line.ended()
    assert result.final_state == "done"
    assert "flow listener" in caplog.text


async def test_unknown_events_fail_loudly() -> None:
    flow = PinCheck()
    await flow.activate_initial_state()
    with pytest.raises(UnknownEventError, match="'spokn'") as raised:
        await flow.send("spokn")
    assert isinstance(raised.value, ValueError)
    assert "spoken" in str(raised.value)


# -- hang-ups and endings -------------------------------------------------------------------------


async def test_a_hang_up_mid_prompt_ends_silently() -> None:
    async with FlowLine(PinCheck) as line:
        await line.speaking("Enter your PIN")
        line.hang_up()
        result = await line.ended()
    assert line.transitions[-1] == ("ask", "disconnected", "hung_up")
    assert result.outcome == "hung_up"
    assert result.ended_by == "caller hung up"
    assert not line.call.hangup_requested.is_set()


async def test_a_call_that_ended_before_the_flow_started_goes_straight_to_hung_up() -> None:
    call = Call(call_sid="CA1")
    call.signal_disconnected("caller hung up")
    runtime = FlowRuntime(PinCheck, call, ScriptedTextToSpeech())
    result = await runtime.run()
    assert result.final_state == "hung_up"
    assert result.outcome == "hung_up"
    with pytest.raises(RuntimeError, match="runs once"):
        await runtime.run()


async def test_transfer_speaks_then_transfers_then_hangs_up() -> None:
    class Desk(VoiceFlow):
        greet = Say("One moment.", initial=True)
        agent = Transfer("Putting you through.", number="+15550100001")
        spoken = greet.to(agent)

    async with FlowLine(Desk) as line:
        result = await line.ended()
    assert line.actions.of_type(Transferred) == [Transferred(line.call.call_sid or "", "+15550100001")]
    assert result.outcome == "transferred"
    assert line.agent_said == ["One moment.", "Putting you through."]


async def test_a_failed_sms_is_reported_and_the_call_still_ends() -> None:
    class Texter(VoiceFlow):
        greet = Say("Hi.", initial=True)
        text = SendSms("Texting you now. Bye.", body="Hello from {caller}")
        spoken = greet.to(text)

    async with FlowLine(Texter) as line:
        line.actions.fail_next("send_sms")
        result = await line.ended()
    assert [type(record) for record in line.actions.records] == [Failed]
    assert any(kind == "action" for kind, _ in line.errors)
    assert result.final_state == "text"
    assert line.call.is_disconnected

    async with FlowLine(Texter) as line:
        await line.ended()
    assert line.actions.of_type(SmsSent)[0].body == "Hello from +15550001234"


async def test_echo_sends_caller_frames_back_until_its_time_limit() -> None:
    class ShortEcho(VoiceFlow):
        greet = Say("Echo.", initial=True)
        echo = Echo(max_s=30.0)
        spoken = greet.to(echo)

    assert ShortEcho.uses_stt is False
    async with FlowLine(ShortEcho) as line:
        await line.until(lambda: "echo" in line.path, "the echo to start")
        before = line.audio_bytes
        frame = bytes(range(160))
        for _ in range(3):
            line.call.put_inbound(frame)
        await line.until(lambda: line.audio_bytes == before + 480, "the frames to come back")
        result = await line.ended()
    assert result.final_state == "echo"
    assert line.call.hangup_reason == "completed"
    assert line.clock.now() >= 30.0


async def test_a_flow_run_driven_over_an_in_process_line_ends_it_and_closes_its_synthesizer() -> None:
    class Short(VoiceFlow):
        bye = Hangup("Bye.", name="Bye")

    closed: list[bool] = []

    class ClosingTts(ScriptedTextToSpeech):
        async def aclose(self) -> None:
            closed.append(True)

    calls: list[Call] = []
    runs: list[FlowRun] = []

    @contextlib.asynccontextmanager
    async def session(started: CallStarted) -> AsyncIterator[CallSession]:
        calls.append(Call(call_sid=started.call_id, caller=started.caller))
        runs.append(FlowRun(calls[0], Short, ClosingTts()))
        yield CallSession(calls[0], runs[0])

    far_end = MemoryFarEnd()  # marks are confirmed by the driver's playout, on real time here
    far_end.start("CA2", "+15550001111")
    async with asyncio.timeout(5):
        reason = await run_call(far_end, session)
    assert closed == [True]
    assert reason == "completed"
    assert calls[0].hangup_reason == "completed" and calls[0].disconnect_reason == "completed"
    assert runs[0].result is not None and runs[0].result.outcome == "completed"
    assert far_end.closed_reason == "completed"
