"""Speaking ahead: a state's next prompt is synthesized as soon as its text is certain.

The stand-in synthesizer waits a known time on the line's virtual clock before its first audio,
as a real service does, so every stage of a turn has an exact length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

import pytest
from pydantic import BaseModel

from voicefsm.core.audio import FRAME_BYTES
from voicefsm.flow import Ask, Hangup, Say, VoiceFlow
from voicefsm.providers.base import TextCallback
from voicefsm.runtime.clock import VirtualClock
from voicefsm.testing import FlowLine

FIRST_BYTE_S = 0.4
MS_PER_CHARACTER = 60


class SlowVoice:
    """A stand-in TTS: ``first_byte_s`` on the virtual clock before the first audio, then all of it."""

    name = "slow"

    def __init__(self, clock: VirtualClock, first_byte_s: float, slower: Mapping[str, float] = {}) -> None:
        self.clock = clock
        self.first_byte_s = first_byte_s
        self.slower = dict(slower)
        self.on_error: TextCallback | None = None
        self.spoken: list[str] = []  # every text asked for (FlowLine.speaking reads it)
        self.completed: list[str] = []
        self.active = 0
        self.most_active = 0

    @staticmethod
    def audio_s(text: str) -> float:
        return max(1, len(text) * MS_PER_CHARACTER // 20) * FRAME_BYTES / 8000

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.spoken.append(text)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.clock.sleep(self.slower.get(text, self.first_byte_s))
            remaining = round(self.audio_s(text) * 8000)
            while remaining > 0:
                size = min(remaining, 10 * FRAME_BYTES)
                remaining -= size
                yield b"\xff" * size
                await asyncio.sleep(0)
            self.completed.append(text)
        finally:
            self.active -= 1

    @property
    def cancelled(self) -> list[str]:
        left = list(self.completed)
        gone = []
        for text in self.spoken:
            if text in left:
                left.remove(text)
            else:
                gone.append(text)
        return gone

    async def aclose(self) -> None:
        return None


class Visit(BaseModel):
    name: str | None = None
    day: str | None = None
    ready: bool | None = None


NAME = "What is your name?"
DAY = "Which day suits you best?"
HELP = "Let me find someone who can help."


class Desk(VoiceFlow):
    """Name, then day; the day question does not depend on the name, so it can be made early."""

    slots_model = Visit

    greet = Say("Hello, this is the front desk.", initial=True)
    ask_name = Ask(NAME, slot="name", retries=0)
    ask_day = Ask(DAY, slot="day", retries=0)
    done = Hangup("See you on {day}, {name}.")
    helped = Hangup(HELP, outcome="transferred")

    spoken = greet.to(ask_name)
    filled = ask_name.to(ask_day) | ask_day.to(done)
    no_input = ask_name.to(helped) | ask_day.to(helped)
    no_match = ask_name.to(helped) | ask_day.to(helped)


class Ready(VoiceFlow):
    """A yes/no question whose answer may send the call elsewhere: the guess can be wrong."""

    slots_model = Visit

    ask_ready = Ask("Shall I book you in?", slot="ready", retries=0, initial=True)
    ask_day = Ask(DAY, slot="day", retries=0)
    done = Hangup("See you on {day}.")
    helped = Hangup(HELP, outcome="transferred")

    filled = ask_ready.to(ask_day) | ask_day.to(done)
    no_input = ask_ready.to(helped) | ask_day.to(helped)
    no_match = ask_ready.to(helped) | ask_day.to(helped)


def line_for(flow: type[VoiceFlow], *, speak_ahead: bool, slower: Mapping[str, float] = {}) -> FlowLine:
    line = FlowLine(flow, speak_ahead=speak_ahead)
    line.tts = SlowVoice(line.clock, FIRST_BYTE_S, slower)  # type: ignore[assignment]
    return line


@pytest.mark.parametrize("speak_ahead", [False, True])
async def test_the_reply_leaves_as_soon_as_the_chart_has_moved_when_it_was_made_ahead(
    speak_ahead: bool,
) -> None:
    async with line_for(Desk, speak_ahead=speak_ahead) as line:
        await line.answer("Ada")
        await line.answer("Tuesday")
        await line.ended()
    voice = line.tts
    assert isinstance(voice, SlowVoice)
    name_turn, day_turn = line.latencies
    assert name_turn.state == "ask_name" and name_turn.via == "speech"
    assert name_turn.stages["parse"] == 0.0 and name_turn.stages["transition"] == 0.0
    # The day question does not depend on the name: made while the name question played.
    assert name_turn.prefetched is speak_ahead
    assert name_turn.stages["first_audio"] == pytest.approx(0.0 if speak_ahead else FIRST_BYTE_S)
    assert name_turn.tts_first_byte_s == pytest.approx(FIRST_BYTE_S)
    assert name_turn.source == "provider"
    # The goodbye needs the day: it is certain only once the day is parsed, then made while the chart moves.
    assert day_turn.prefetched is speak_ahead
    assert day_turn.stages["first_audio"] == pytest.approx(FIRST_BYTE_S)
    assert line.agent_said == [
        "Hello, this is the front desk.",
        NAME,
        DAY,
        "See you on Tuesday, Ada.",
    ]
    assert voice.most_active == 1  # never two syntheses at once
    runtime = line.runtime
    if speak_ahead:
        assert runtime.ahead is not None
        assert (runtime.ahead.stats.used, runtime.ahead.stats.wasted) == (3, 0)
    else:
        assert runtime.ahead is None


@pytest.mark.parametrize("speak_ahead", [False, True])
async def test_the_next_say_is_made_while_the_current_one_plays(speak_ahead: bool) -> None:
    async with line_for(Desk, speak_ahead=speak_ahead) as line:
        await line.answer("Ada")
        line.hang_up()
        await line.ended()
    _greet, name = (turn for turn in line.turns if turn.speaker == "agent")
    # The name question's audio follows the greeting's without a gap when it was made meanwhile.
    waited = name.end_s - name.start_s - SlowVoice.audio_s(NAME)
    assert waited == pytest.approx(0.0 if speak_ahead else FIRST_BYTE_S, abs=0.021)


async def test_talking_over_the_question_cancels_the_synthesis_started_ahead() -> None:
    async with line_for(Desk, speak_ahead=True, slower={DAY: 30.0}) as line:
        await line.speaking(NAME)
        await line.until(lambda: DAY in line.tts.spoken, "the day question to be made ahead")
        line.say("Ada")  # talks over the name question: the answer may change the path
        await line.heard(DAY)
        await line.answer("Tuesday")
        await line.ended()
    voice = line.tts
    assert isinstance(voice, SlowVoice)
    assert voice.cancelled == [DAY]  # the speculation, stopped when the caller spoke
    assert voice.spoken.count(DAY) == 2 and voice.completed.count(DAY) == 1
    ahead = line.runtime.ahead
    assert ahead is not None and ahead.stats.wasted == 1
    assert voice.most_active == 1


async def test_a_wrong_guess_is_never_heard() -> None:
    async with line_for(Ready, speak_ahead=True) as line:
        await line.answer("purple elephants")  # neither yes nor no: the call goes to a person
        result = await line.ended()
    voice = line.tts
    assert isinstance(voice, SlowVoice)
    assert result.outcome == "transferred"
    assert DAY in voice.completed  # guessed and made while the question played...
    assert DAY not in line.agent_said  # ...but never played
    assert line.agent_said == ["Shall I book you in?", HELP]
    ahead = line.runtime.ahead
    assert ahead is not None and (ahead.stats.used, ahead.stats.wasted) == (0, 1)


async def test_hanging_up_cancels_the_synthesis_started_ahead() -> None:
    async with line_for(Desk, speak_ahead=True, slower={DAY: 30.0}) as line:
        await line.speaking(NAME)
        await line.until(lambda: DAY in line.tts.spoken, "the day question to be made ahead")
        line.hang_up()
        await line.ended()
    voice = line.tts
    assert isinstance(voice, SlowVoice)
    assert DAY in voice.cancelled and voice.active == 0


class Party(BaseModel):
    size: int | None = None


class Table(VoiceFlow):
    slots_model = Party

    ask_size = Ask("How many of you?", slot="size", retries=0, initial=True)
    done = Hangup("A table for {size}.")
    helped = Hangup(HELP, outcome="transferred")

    filled = ask_size.to(done)
    no_input = ask_size.to(helped)
    no_match = ask_size.to(helped)


async def test_keys_are_timed_from_the_last_key_and_the_pause_that_ends_them_is_the_commit_stage() -> None:
    async with line_for(Table, speak_ahead=True) as line:
        await line.keys("4")  # no terminator: the entry ends after the inter-digit pause
        await line.ended()
    (keys,) = line.latencies
    assert (keys.state, keys.via) == ("ask_size", "dtmf")
    assert keys.stages == {
        "commit": pytest.approx(line.runtime.limits.inter_digit_s),
        "parse": 0.0,
        "transition": 0.0,
        "first_audio": pytest.approx(FIRST_BYTE_S),  # "A table for 4." needs the answer: made once parsed
    }
    assert keys.prefetched and keys.source == "provider"
    assert line.agent_said == ["How many of you?", "A table for 4."]
