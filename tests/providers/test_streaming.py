"""The lifecycle the cloud recognizers share (StreamingRecognizer), on a recognizer without a service."""

from __future__ import annotations

import asyncio
import logging

import pytest

from voicefsm.errors import ProviderError
from voicefsm.providers.base import SpeechToText
from voicefsm.providers.streaming import StreamingRecognizer

TIMEOUT_S = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stubborn(StreamingRecognizer):
    """One task that swallows its first cancellation, as the ElevenLabs SDK's close() does."""

    provider = "stubborn-stt"
    recancel_after_s = 0.05

    def __init__(self, clock: FakeClock, **options: bool) -> None:
        super().__init__(echo_window_s=0.4, clock=clock, **options)
        self.released = 0
        self.cancellations = 0
        self.running = asyncio.Event()

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        self._begin()
        self._spawn(self._work(), name="stubborn-work")

    def set_hints(self, hints: object) -> None:
        del hints

    async def _work(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancellations += 1
        await asyncio.Event().wait()  # the second cancellation ends it

    async def _release(self) -> None:
        self.released += 1


def collect(stt: StreamingRecognizer) -> dict[str, list[str]]:
    heard: dict[str, list[str]] = {"committed": [], "recognizing": [], "error": [], "discarded": []}
    stt.on_committed = heard["committed"].append
    stt.on_recognizing = heard["recognizing"].append
    stt.on_error = heard["error"].append
    stt.on_discarded = heard["discarded"].append
    return heard


async def test_stop_cancels_again_a_task_that_swallowed_a_cancellation_and_releases_once() -> None:
    stt = Stubborn(FakeClock(), discard_partials_while_speaking=False)
    assert isinstance(stt, SpeechToText)
    await stt.start(asyncio.Queue())
    async with asyncio.timeout(TIMEOUT_S):
        await stt.running.wait()
        await asyncio.gather(stt.stop(), stt.stop())  # the second waits for the first
    assert stt.cancellations == 1
    assert stt.released == 1
    assert stt.finished.is_set()
    assert all(task.done() for task in stt._tasks)
    await stt.stop()
    assert stt.released == 1


async def test_start_is_once_and_no_task_starts_after_stop() -> None:
    stt = Stubborn(FakeClock(), discard_partials_while_speaking=False)
    await stt.start(asyncio.Queue())
    with pytest.raises(RuntimeError, match=r"Stubborn.start\(\) was called twice"):
        await stt.start(asyncio.Queue())
    async with asyncio.timeout(TIMEOUT_S):
        await stt.stop()
    with pytest.raises(RuntimeError, match="after stop"):
        stt._spawn(asyncio.sleep(0), name="late")
    fresh = Stubborn(FakeClock(), discard_partials_while_speaking=False)
    await fresh.stop()
    with pytest.raises(RuntimeError, match=r"called after stop\(\)"):
        await fresh.start(asyncio.Queue())


async def test_finals_during_and_just_after_agent_speech_are_discarded_partials_pass() -> None:
    clock = FakeClock()
    stt = Stubborn(clock, discard_partials_while_speaking=False)
    heard = collect(stt)
    stt.set_speaking(True)
    stt._heard_partial("hel")
    stt._heard_final("hello from the agent")
    stt.set_speaking(False)
    clock.now += 0.3
    stt._heard_final("its tail")
    clock.now += 0.2
    stt._heard_final("the caller")
    stt._heard_final("   ")
    assert heard["recognizing"] == ["hel"]
    assert heard["discarded"] == ["hello from the agent", "its tail"]
    assert heard["committed"] == ["the caller"]
    assert stt.discarded == 2


async def test_partials_can_be_discarded_too() -> None:
    stt = Stubborn(FakeClock(), discard_partials_while_speaking=True)
    heard = collect(stt)
    stt.set_speaking(True)
    stt._heard_partial("hel")
    assert heard["recognizing"] == []
    assert stt.discarded == 1


async def test_a_failure_is_reported_once_and_silences_the_recognizer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stt = Stubborn(FakeClock(), discard_partials_while_speaking=False)
    heard = collect(stt)

    def broken(text: str) -> None:
        raise ValueError(text)

    stt.on_committed = broken
    with caplog.at_level(logging.ERROR, "voicefsm.providers.streaming"):
        stt._heard_final("raises in the callback")  # logged, not raised into the provider
    assert "a recognizer callback raised" in caplog.text
    stt._fail(ProviderError("stubborn-stt", "the socket died"))
    stt._fail(ProviderError("stubborn-stt", "and again"))
    stt._heard_final("too late")
    assert heard["error"] == ["stubborn-stt: the socket died"]
    assert stt.error is not None and stt.finished.is_set()
    assert heard["committed"] == []
