"""Local speech: the compact grammar, recognition in worker processes, and synthesis off the loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from voicefsm.core.audio import FRAME_BYTES, ulaw_decode, ulaw_encode
from voicefsm.flow import Day, Digits, Time, YesNo
from voicefsm.providers.base import RecognitionHints, hints_from_phrases
from voicefsm.providers.local_grammar import jsgf_grammar
from voicefsm.providers.local_stt import PocketsphinxSpeechToText
from voicefsm.providers.local_tts import EspeakTextToSpeech, synthesize_ulaw
from voicefsm.settings import Settings

_RULE = re.compile(r"^(public )?<(\w+)> = (.*);$")


def expand(grammar: str) -> set[str]:
    """Every phrase a grammar of the shape jsgf_grammar writes accepts (for non-repeating ones)."""
    rules: dict[str, list[str]] = {}
    top = ""
    for line in grammar.splitlines():
        if match := _RULE.match(line):
            rules[match[2]] = [alt.strip("() ") for alt in match[3].split(" | ")]
            top = match[2] if match[1] else top

    def phrases(rule: str) -> set[str]:
        out: set[str] = set()
        for alternative in rules[rule]:
            word, _, rest = alternative.partition(" ")
            if not rest:
                out.add(word)
            elif rest.startswith("["):
                out.add(word)
                out |= {f"{word} {tail}" for tail in phrases(rest.strip("[]<>"))}
            else:
                out |= {f"{word} {tail}" for tail in phrases(rest.strip("<>"))}
        return out

    return phrases(top)


@pytest.mark.parametrize("expectation", [Day(), Time(), YesNo()], ids=repr)
def test_the_grammar_accepts_exactly_the_phrases_in_far_fewer_rules(expectation: Any) -> None:
    phrases = expectation.phrases()
    grammar = jsgf_grammar(phrases, lambda word: True)
    assert grammar is not None
    assert expand(grammar) == set(phrases)
    assert grammar.count("\n") < len(phrases) / 3 or len(phrases) < 60


def test_words_the_recognizer_cannot_say_drop_their_phrases_and_repetition_is_declared() -> None:
    grammar = jsgf_grammar(["next tuesday", "zorblax day", "monday"], lambda word: word != "zorblax")
    assert grammar is not None and expand(grammar) == {"next tuesday", "monday"}
    assert jsgf_grammar(["zorblax"], lambda word: False) is None
    digits = jsgf_grammar(["one", "two", "oh"], lambda word: True, repeatable=True)
    assert digits is not None and re.search(r"^public <phrases> = <n\d+>\+;$", digits, re.MULTILINE)


def noisy(ulaw: bytes, seconds_before: float = 0.4, seconds_after: float = 1.0) -> list[bytes]:
    """``ulaw`` between stretches of quiet line noise, as 20 ms frames."""
    rng = np.random.default_rng(3)

    def noise(seconds: float) -> bytes:
        return ulaw_encode(rng.normal(0, 30, int(seconds * 8000)).astype(np.int16).tobytes())

    audio = noise(seconds_before) + ulaw + noise(seconds_after)
    audio += b"\xff" * (-len(audio) % FRAME_BYTES)
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


async def recognize(hints: RecognitionHints, *said: str) -> tuple[list[str], list[str], float]:
    """Feed ``said`` to a recognizer as phone audio; returns (partials, finals, worst loop lag in s)."""
    stt = PocketsphinxSpeechToText()
    partials: list[str] = []
    finals: list[str] = []
    done = asyncio.Event()
    stt.on_recognizing = partials.append
    errors: list[str] = []
    stt.on_committed = lambda text: (finals.append(text), done.set() if len(finals) == len(said) else None)
    stt.on_error = lambda reason: (errors.append(reason), done.set())
    stt.set_hints(hints)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        lag = await worst_loop_lag(lambda: _feed_and_wait(audio, said, done))
    finally:
        await stt.stop()
    assert errors == [], f"the recognizer failed: {errors}"
    return partials, finals, lag


async def _feed_and_wait(
    audio: asyncio.Queue[bytes | None], said: tuple[str, ...], done: asyncio.Event
) -> None:
    for text in said:
        for frame in noisy(synthesize_ulaw(text)):
            audio.put_nowait(frame)
    async with asyncio.timeout(60):  # the first decode also starts the worker processes
        await done.wait()


async def worst_loop_lag(work: Callable[[], Awaitable[None]]) -> float:
    """Run ``work`` while a 5 ms ticker measures how late the loop gets to it."""
    lags: list[float] = []
    due = time.perf_counter()

    async def tick() -> None:
        nonlocal due
        while True:
            due = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - due)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker starts timing its first tick before the work starts
    try:
        await work()
    finally:
        lags.append(max(0.0, time.perf_counter() - due))  # the tick still pending is late too
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    return max(lags)


def meaning(expectation: Any, text: str) -> object:
    """What ``expectation`` makes of ``text`` on Monday 2024-06-03 (a NoMatch when nothing)."""
    parsed = expectation.parse_text(text, today=dt.date(2024, 6, 3))
    return getattr(parsed, "value", parsed)


def hints_for(expectation: Any) -> RecognitionHints:
    return hints_from_phrases(
        expectation.grammar_phrases(),
        open_vocabulary=expectation.open_vocabulary(),
        repeatable=expectation.repeatable(),
    )


async def test_expected_answers_are_recognised_without_blocking_the_loop() -> None:
    # What matters is what the flow understands: the recognizer's words for it may vary ("yup").
    partials, finals, _ = await recognize(hints_for(Day()), "friday")  # starts the workers
    assert [meaning(Day(), text) for text in finals] == [dt.date(2024, 6, 7)] and partials == [""]
    _, finals, lag = await recognize(hints_for(Time()), "ten thirty", "three p m")
    assert [meaning(Time(), text) for text in finals] == [dt.time(10, 30), dt.time(15, 0)]
    assert lag < 0.1  # decoding runs in a worker process, not on the loop
    _, finals, _ = await recognize(hints_for(YesNo()), "yes")
    assert [meaning(YesNo(), text) for text in finals] == [True]


async def test_free_text_uses_the_open_language_model() -> None:
    _, finals, _ = await recognize(RecognitionHints(open_vocabulary=True), "my name is alex")
    assert len(finals) == 1 and finals[0]  # some words: the open model is rough on synthetic voices


async def test_quiet_line_noise_is_not_speech_and_speech_cut_off_by_the_end_still_counts() -> None:
    stt = PocketsphinxSpeechToText()
    heard: list[str] = []
    stt.on_recognizing = stt.on_committed = heard.append
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    for frame in noisy(b"", seconds_before=3.0, seconds_after=0.0):
        audio.put_nowait(frame)
    audio.put_nowait(None)
    assert stt._reader is not None
    await asyncio.wait_for(stt._reader, 10)
    await stt.stop()
    assert heard == []

    cut_off = PocketsphinxSpeechToText()
    cut_off.on_committed = heard.append
    cut_off.set_hints(hints_for(Day()))
    audio = asyncio.Queue()
    await cut_off.start(audio)
    for frame in noisy(synthesize_ulaw("friday"), seconds_after=0.0):
        audio.put_nowait(frame)
    audio.put_nowait(None)  # the line closes before the caller falls silent
    assert cut_off._reader is not None
    await asyncio.wait_for(cut_off._reader, 30)
    await cut_off.stop()
    assert [meaning(Day(), text) for text in heard] == [dt.date(2024, 6, 7)]


async def test_digits_may_repeat() -> None:
    _, finals, _ = await recognize(hints_for(Digits(3, 6)), "four one two two")
    # The grammar lets digit words repeat (a one-phrase grammar would return one word). The synthetic
    # voice is recognised roughly: digits are sometimes gained at either end, so only the run is checked.
    assert len(finals) == 1 and "four one two" in finals[0] and len(finals[0].split()) >= 4


async def test_speech_is_synthesized_off_the_loop_as_phone_frames() -> None:
    tts = EspeakTextToSpeech()
    text = "Thanks for calling. " * 48
    chunks: list[bytes] = []

    async def speak() -> None:
        chunks.extend([chunk async for chunk in tts.synthesize(text)])

    started = time.perf_counter()
    lag = await worst_loop_lag(speak)
    took = time.perf_counter() - started
    audio = b"".join(chunks)
    assert len(audio) % FRAME_BYTES == 0 or len(chunks[-1]) < len(chunks[0])
    assert 40 < len(audio) / 8000 < 160  # seconds of speech
    assert np.abs(np.frombuffer(ulaw_decode(audio), np.int16)).max() > 3000  # not silence
    # On the loop, synthesis would stall it for about as long as it takes; off the loop only scheduling
    # noise is left. Relative, so a machine busy with other work slows both sides alike.
    assert lag < took / 3, f"the loop stalled {lag * 1000:.0f} ms of the {took * 1000:.0f} ms synthesis"


async def test_the_silence_that_ends_an_utterance_comes_from_the_settings() -> None:
    settings = Settings(_env_file=None, stt_vad_silence_threshold_s=0.3)  # type: ignore[call-arg]
    stt = PocketsphinxSpeechToText.from_settings(settings)
    assert stt.end_of_speech_frames == 15
    committed = asyncio.Event()
    heard: list[str] = []
    stt.on_committed = lambda text: (heard.append(text), committed.set())
    stt.set_hints(hints_for(Day()))
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        # Half a second of quiet and the line stays open: only the short endpoint can commit this.
        for frame in noisy(synthesize_ulaw("friday"), seconds_after=0.5):
            audio.put_nowait(frame)
        async with asyncio.timeout(30):
            await committed.wait()
    finally:
        await stt.stop()
    assert [meaning(Day(), text) for text in heard] == [dt.date(2024, 6, 7)]


async def test_a_decoder_worker_that_dies_fails_one_decode_and_the_next_starts_afresh() -> None:
    from concurrent.futures.process import BrokenProcessPool

    from voicefsm.providers import local_decoder

    friday = ulaw_decode(b"".join(noisy(synthesize_ulaw("friday"))))
    phrases = Day().grammar_phrases()
    assert await local_decoder.decode(friday, phrases) == "friday"
    pool = local_decoder._pool
    assert pool is not None
    for process in list(pool._processes.values()):  # type: ignore[attr-defined]
        process.kill()
        process.join(5)
    with pytest.raises(BrokenProcessPool):
        await local_decoder.decode(friday, phrases)
    assert await local_decoder.decode(friday, phrases) == "friday"
    assert local_decoder._pool is not pool
