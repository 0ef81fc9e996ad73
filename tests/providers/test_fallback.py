"""TTS failure handling: a deadline on each request, one retry, then the fallback voice (real espeak-ng)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from voicefsm.errors import ProviderError
from voicefsm.flow.loader import load_flow
from voicefsm.providers.base import TextCallback, TextToSpeech
from voicefsm.providers.fallback import ResilientTextToSpeech, resilient_tts
from voicefsm.providers.local_tts import EspeakTextToSpeech
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.settings import Settings
from voicefsm.testing.line import FlowLine

BOOKING = Path(__file__).resolve().parents[2] / "flows" / "booking.py"
PROMPT = "Hello, thanks for calling."


class HangingTextToSpeech:
    """A provider whose request never answers (a socket that went quiet); counts closes."""

    name = "hanging"

    def __init__(self) -> None:
        self.on_error: TextCallback | None = None
        self.requests = 0
        self.abandoned = 0
        self.closed = False

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.requests += 1
        try:
            await asyncio.Event().wait()
            yield b""  # never reached
        finally:
            self.abandoned += 1

    async def aclose(self) -> None:
        self.closed = True


class SilentTextToSpeech(ScriptedTextToSpeech):
    """A provider that answers with no audio at all."""

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.spoken.append(text)
        return
        yield b""


async def collect(tts: TextToSpeech, text: str = PROMPT) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


async def test_a_failed_request_is_retried_once_on_the_same_provider() -> None:
    primary = ScriptedTextToSpeech()
    primary.fail_next("503 from the provider")
    tts = ResilientTextToSpeech(primary, None, deadline_s=1.0)
    audio = await collect(tts)
    assert len(audio) == primary.audio_bytes_for(PROMPT) and primary.spoken == [PROMPT]
    assert tts.events == [("retry", "scripted-tts: 503 from the provider")]


async def test_a_provider_that_keeps_failing_falls_back_to_local_speech() -> None:
    primary = ScriptedTextToSpeech()
    primary.fail_always = "quota exceeded"
    tts = ResilientTextToSpeech(primary, lambda: EspeakTextToSpeech(), deadline_s=5.0, fallback_name="local")
    audio = await collect(tts)
    assert len(audio) > 8000  # over a second of espeak-ng speech at 8 kHz
    assert len(set(audio)) > 20  # speech, not silence
    assert [kind for kind, _ in tts.events] == ["retry", "fallback"]
    await tts.aclose()


async def test_a_request_that_hangs_meets_its_deadline_and_the_fallback_speaks() -> None:
    primary = HangingTextToSpeech()
    tts = ResilientTextToSpeech(primary, lambda: EspeakTextToSpeech(), deadline_s=0.2, fallback_name="local")
    async with asyncio.timeout(10):
        audio = await collect(tts)
    assert len(audio) > 8000
    assert (primary.requests, primary.abandoned) == (2, 2)  # each hung request was cancelled, not left
    assert tts.events[0] == ("retry", "no audio within 0.2 s")
    await tts.aclose()
    assert primary.closed


class StallingTextToSpeech:
    """A provider that sends ``chunks`` chunks at once, then goes quiet until ``resume`` is set."""

    name = "stalling"

    def __init__(self, chunks: int) -> None:
        self.on_error: TextCallback | None = None
        self.chunks = chunks
        self.resume = asyncio.Event()
        self.requests = 0

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.requests += 1
        for _ in range(self.chunks):
            yield b"\xff" * 160
        await self.resume.wait()
        yield b"\xff" * 160

    async def aclose(self) -> None:
        return None


async def test_a_provider_that_stalls_between_chunks_meets_the_deadline() -> None:
    primary = StallingTextToSpeech(chunks=3)
    tts = ResilientTextToSpeech(primary, ScriptedTextToSpeech, deadline_s=0.1, fallback_name="scripted")
    async with asyncio.timeout(10):
        audio = await collect(tts)
    # Three chunks, then silence: each attempt is cut at the gap, the fallback speaks from the start.
    assert len(audio) == 2 * 3 * 160 + ScriptedTextToSpeech().audio_bytes_for(PROMPT)
    assert primary.requests == 2
    assert tts.events == [("retry", "no audio within 0.1 s"), ("fallback", "no audio within 0.1 s")]


async def test_time_the_listener_spends_between_chunks_is_not_the_providers() -> None:
    """Playback paces the consumer (Call._pace sleeps between chunks): only the provider's waits count."""
    tts = ResilientTextToSpeech(ScriptedTextToSpeech(chunk_frames=1), None, deadline_s=0.05)
    chunks = 0
    async with asyncio.timeout(10):
        async for _ in tts.synthesize("one two three"):
            chunks += 1
            if chunks <= 3:
                await asyncio.sleep(0.12)  # the consumer is slow, past the provider's deadline
    assert chunks > 3 and tts.events == []


async def test_cancelling_the_listener_is_a_cancellation_not_a_deadline() -> None:
    primary = StallingTextToSpeech(chunks=1)
    tts = ResilientTextToSpeech(primary, ScriptedTextToSpeech, deadline_s=5.0)
    first = asyncio.Event()

    async def listen() -> None:
        async for _ in tts.synthesize(PROMPT):
            first.set()

    task = asyncio.create_task(listen())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tts.events == [] and primary.requests == 1


async def test_no_audio_at_all_counts_as_a_failure() -> None:
    tts = ResilientTextToSpeech(SilentTextToSpeech(), ScriptedTextToSpeech, deadline_s=1.0)
    audio = await collect(tts)
    assert len(audio) == ScriptedTextToSpeech().audio_bytes_for(PROMPT)
    assert [kind for kind, _ in tts.events] == ["retry", "fallback"]


async def test_when_every_provider_fails_the_error_names_each() -> None:
    primary, fallback = ScriptedTextToSpeech(), ScriptedTextToSpeech()
    primary.fail_always, fallback.fail_always = "primary down", "fallback down"
    tts = ResilientTextToSpeech(primary, lambda: fallback, deadline_s=1.0, primary_name="azure")
    with pytest.raises(ProviderError) as failed:
        await collect(tts)
    assert str(failed.value) == (
        "tts: azure: scripted-tts: primary down; azure: scripted-tts: primary down; "
        "fallback: scripted-tts: fallback down"
    )


async def test_a_prompt_cut_short_by_barge_in_closes_the_provider_request() -> None:
    primary = ScriptedTextToSpeech(chunk_frames=1)
    tts = ResilientTextToSpeech(primary, None, deadline_s=1.0)
    stream = tts.synthesize("a long prompt that the caller interrupts halfway through")
    first = await anext(stream)
    await stream.aclose()
    assert first and tts.events == []


async def test_a_remaining_failure_is_the_flows_tts_error_as_before() -> None:
    flow = load_flow(str(BOOKING), None)
    line = FlowLine(flow)
    broken = ScriptedTextToSpeech()
    broken.fail_always = "no voice today"
    line.tts = ResilientTextToSpeech(broken, None, deadline_s=1.0)  # type: ignore[assignment]
    async with line:
        await line.ended()
    assert any("no voice today" in str(error) for error in line.errors), line.errors


async def test_the_served_tts_is_resilient_with_the_configured_fallback() -> None:
    settings = Settings.model_validate({"tts_fallback": "local", "tts_deadline_s": 3.0})
    tts = resilient_tts("scripted", settings)
    assert isinstance(tts, ResilientTextToSpeech) and tts.deadline_s == 3.0
    assert tts.fallback_name == "local" and tts._fallback_factory is not None
    assert isinstance(tts._fallback_factory(), EspeakTextToSpeech)
    alone = resilient_tts("local", Settings.model_validate({"tts_fallback": "local"}))
    assert isinstance(alone, ResilientTextToSpeech) and alone._fallback_factory is None
