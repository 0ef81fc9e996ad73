from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from voicefsm.core.events import (
    CallEvent,
    Committed,
    Disconnected,
    MarkReceived,
    Recognizing,
    SttError,
)
from voicefsm.core.intents import ClearBuffer, PlaceMark, PlayAudio
from voicefsm.core.marks import MarkOutcome
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.runtime.call import INBOUND_MAX_FRAMES, SPEAK_PIECE_BYTES, Call


class FakeLine:
    """Plays the transport's role without a socket: drains the call's outbound queue, echoes marks."""

    def __init__(self, call: Call, *, echo_marks: bool = True) -> None:
        self.call = call
        self.echo_marks = echo_marks
        self.sent: list[object] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while (item := await self.call.next_outbound()) is not None:
            self.sent.append(item)
            if isinstance(item, PlaceMark) and self.echo_marks:
                self.call.mark_echoed(item.name)

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    call = Call(call_sid="CA1", caller="+15550001111")
    yield call
    call.signal_disconnected("test over")


def record(call: Call) -> list[CallEvent]:
    events: list[CallEvent] = []
    call.subscribe(events.append)
    return events


async def test_two_waiters_with_one_label_never_resolve_each_other(call: Call) -> None:
    first, first_done = call.place_mark("prompt")
    second, second_done = call.place_mark("prompt")
    assert first != second
    call.mark_echoed(second)
    assert second_done.result() is MarkOutcome.PLAYED
    assert not first_done.done()
    call.mark_echoed(first)
    assert first_done.result() is MarkOutcome.PLAYED


async def test_clear_drops_queued_audio_and_interrupts_pending_marks(call: Call) -> None:
    events = record(call)
    call.put_outbound(b"\x00" * 160)
    name, waiter = call.place_mark("prompt")
    call.request_clear_buffer()
    assert waiter.result() is MarkOutcome.INTERRUPTED
    assert await call.next_outbound() == ClearBuffer()
    # Twilio echoes the cleared mark anyway: it is reported interrupted, not played.
    assert call.mark_echoed(name) is MarkOutcome.INTERRUPTED
    assert events == [MarkReceived(name, interrupted=True)]


async def test_clear_after_marks_were_sent_still_interrupts_them(call: Call) -> None:
    line = FakeLine(call, echo_marks=False)
    _, waiter = call.place_mark("prompt")
    await asyncio.wait_for(_until(lambda: len(line.sent) == 1), 2)
    call.request_clear_buffer()
    assert waiter.result() is MarkOutcome.INTERRUPTED
    await line.aclose()


async def test_disconnected_exactly_once_and_settles_everything(call: Call) -> None:
    events = record(call)
    _, waiter = call.place_mark("bye")
    assert call.signal_disconnected("caller hung up") is True
    assert call.signal_disconnected("again") is False
    assert waiter.result() is MarkOutcome.DISCONNECTED
    assert events == [Disconnected("caller hung up")]
    assert await call.next_outbound() is None
    assert call.disconnect_reason == "caller hung up"
    # After the end, nothing queues and marks settle at once.
    call.put_outbound(b"\x00" * 160)
    _, late = call.place_mark("late")
    assert late.result() is MarkOutcome.DISCONNECTED


async def test_inbound_queue_is_bounded_and_drops_oldest(call: Call) -> None:
    for index in range(INBOUND_MAX_FRAMES + 3):
        call.put_inbound(index.to_bytes(2, "big"))
    assert call.inbound.qsize() == INBOUND_MAX_FRAMES
    assert call.inbound_dropped == 3
    assert call.inbound.get_nowait() == (3).to_bytes(2, "big")


async def test_clear_inbound_keeps_the_end_of_audio_sentinel(call: Call) -> None:
    call.put_inbound(b"a")
    call.signal_disconnected("done")
    assert call.clear_inbound() == 0
    assert call.inbound.get_nowait() is None


async def test_speak_plays_audio_then_confirms_by_mark(call: Call) -> None:
    tts = ScriptedTextToSpeech()
    line = FakeLine(call)
    result = await call.speak(tts, "Hello there", label="greet")
    await line.aclose()
    assert result.played and result.last_spoken == "Hello there"
    audio = [item for item in line.sent if isinstance(item, PlayAudio)]
    assert sum(len(item.ulaw) for item in audio) == tts.audio_bytes_for("Hello there")
    assert all(len(item.ulaw) % 160 == 0 for item in audio)
    assert isinstance(line.sent[-1], PlaceMark) and line.sent[-1].name.startswith("greet#")


async def test_speak_sends_audio_in_pieces_of_whole_frames_up_to_a_second(call: Call) -> None:
    # A synthesizer's chunk goes as one message (a cache hit streams a second at a time), cut at a
    # second; a chunk's unfinished frame waits for the next chunk, the last is padded.
    tts = ScriptedTextToSpeech(chunk_frames=80)  # 1.6 s chunks
    line = FakeLine(call)
    result = await call.speak(tts, "x" * 200)
    await line.aclose()
    assert result.played
    sizes = [len(item.ulaw) for item in line.sent if isinstance(item, PlayAudio)]
    total = tts.audio_bytes_for("x" * 200)
    assert sum(sizes) == total and max(sizes) == SPEAK_PIECE_BYTES == 8000
    assert all(size % 160 == 0 for size in sizes)
    assert len(sizes) < total // 160 // 10


class ChunkedSpeech:
    """A synthesizer that yields the chunks it is given and stops before chunk ``stall_at`` until released."""

    name = "chunked"

    def __init__(self, chunk_ms: list[int], *, stall_at: int | None = None) -> None:
        self.on_error: Callable[[str], None] | None = None
        self.chunks = [b"\xff" * (ms * 8) for ms in chunk_ms]
        self.stall_at = stall_at
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.stall_at:
                self.stalled.set()
                await self.release.wait()
            yield chunk
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


class RecordingTap:
    """Counts the agent audio a call hands its recorder."""

    def __init__(self) -> None:
        self.agent_bytes = 0

    def tap_caller(self, frame: bytes) -> None:
        return None

    def tap_agent(self, audio: bytes) -> None:
        self.agent_bytes += len(audio)

    def clear_agent(self) -> None:
        return None


def played(line: FakeLine) -> list[int]:
    return [len(item.ulaw) for item in line.sent if isinstance(item, PlayAudio)]


async def test_speak_gathers_chunks_while_the_caller_has_audio_queued(call: Call) -> None:
    # A far end that plays in real time: once 0.3 s is queued there, 200 ms chunks are gathered into
    # pieces of a second; the first chunks go at once (the caller must hear the prompt start).
    call.send_ahead_s = 30.0
    tts = ChunkedSpeech([200] * 18)
    line = FakeLine(call)
    result = await call.speak(tts, "the echo line's greeting")
    await line.aclose()
    assert result.played
    sizes = played(line)
    assert sizes[:2] == [1600, 1600]
    assert sum(sizes) == 18 * 1600 and max(sizes) == SPEAK_PIECE_BYTES
    assert len(sizes) <= 6


async def test_gathered_audio_goes_before_the_queued_audio_runs_out(call: Call) -> None:
    # The synthesizer stalls with a chunk gathered: a timer sends it while the caller still has
    # audio queued, not when the synthesizer comes back.
    call.send_ahead_s = 30.0
    tts = ChunkedSpeech([200, 200, 200, 200], stall_at=3)
    line = FakeLine(call)
    speaking = asyncio.create_task(call.speak(tts, "a stalling synthesizer"))
    await asyncio.wait_for(tts.stalled.wait(), 2)
    assert played(line) == [1600, 1600]  # the third chunk is gathered
    await asyncio.wait_for(_until(lambda: len(played(line)) == 3), 2)
    assert not speaking.done()  # still stalled: the timer sent it
    tts.release.set()
    result = await asyncio.wait_for(speaking, 2)
    await line.aclose()
    assert result.played and played(line) == [1600, 1600, 1600, 1600]


async def test_a_barge_in_drops_the_gathered_audio_unsent_and_unrecorded() -> None:
    tap = RecordingTap()
    call = Call(call_sid="CA1", tap=tap)
    call.send_ahead_s = 30.0
    tts = ChunkedSpeech([2000, 200, 200], stall_at=2)  # 2 s queued: the 200 ms after it is gathered
    line = FakeLine(call, echo_marks=False)
    speaking = asyncio.create_task(call.speak(tts, "interrupted while gathering"))
    await asyncio.wait_for(tts.stalled.wait(), 2)
    speaking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await speaking
    await asyncio.wait_for(_until(lambda: any(isinstance(i, ClearBuffer) for i in line.sent)), 2)
    await line.aclose()
    assert sum(played(line)) == 16000 and tap.agent_bytes == 16000
    call.signal_disconnected("test over")


async def test_speak_reports_a_provider_failure_and_calls_on_error(call: Call) -> None:
    tts = ScriptedTextToSpeech()
    errors: list[str] = []
    tts.on_error = errors.append
    tts.fail_next("quota exceeded")
    result = await call.speak(tts, "Hi")
    assert result.error is not None and "quota exceeded" in result.error
    assert errors == [result.error]


async def test_speak_without_a_mark_echo_times_out_as_an_error(call: Call) -> None:
    line = FakeLine(call, echo_marks=False)
    result = await call.speak(ScriptedTextToSpeech(), "Hi", mark_timeout_s=0.05)
    await line.aclose()
    assert result.error == "playback was not confirmed within 0.05 s"


async def test_cancelling_speak_is_barge_in(call: Call) -> None:
    line = FakeLine(call, echo_marks=False)
    speaking = asyncio.create_task(call.speak(ScriptedTextToSpeech(), "A long prompt to interrupt"))
    await asyncio.wait_for(_until(lambda: any(isinstance(i, PlaceMark) for i in line.sent)), 2)
    speaking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await speaking
    await asyncio.wait_for(_until(lambda: any(isinstance(i, ClearBuffer) for i in line.sent)), 2)
    await line.aclose()


async def test_speak_on_an_ended_call_reports_disconnected(call: Call) -> None:
    call.signal_disconnected("gone")
    result = await call.speak(ScriptedTextToSpeech(), "Hi")
    assert result.call_disconnected and not result.played


async def test_hangup_request_keeps_the_first_reason(call: Call) -> None:
    call.request_disconnect("goodbye")
    call.request_disconnect("second")
    assert call.hangup_requested.is_set() and call.hangup_reason == "goodbye"


async def test_a_failing_listener_does_not_stop_the_others(call: Call) -> None:
    seen: list[CallEvent] = []

    def broken(event: CallEvent) -> None:
        raise RuntimeError("listener bug")

    call.subscribe(broken)
    call.subscribe(seen.append)
    call.emit(Committed("hi"))
    assert seen == [Committed("hi")]


async def test_stt_is_built_from_the_factory_given_at_construction_and_results_become_events() -> None:
    stt = ScriptedSpeechToText()
    call = Call(call_sid="CA1", caller="+15550001111", parameters={"lang": "en"}, stt_factory=lambda: stt)
    assert (call.caller, call.parameters, call.stt) == ("+15550001111", {"lang": "en"}, None)
    events = record(call)
    await call.start_stt()
    assert call.stt is stt and stt.started
    stt.say("book a table")
    stt.fail("socket closed")
    assert events == [
        Recognizing("book"),
        Recognizing("book a"),
        Committed("book a table"),
        SttError("socket closed"),
    ]
    await call.stop_stt()
    assert stt.stopped and call.stt is None
    call.signal_disconnected("test over")


async def _until(predicate: Callable[[], bool]) -> None:
    """Yield loop turns (no wall-clock waiting) until ``predicate`` holds; callers bound it with wait_for."""
    while not predicate():  # noqa: ASYNC110 - nothing to await: the producers are plain loop callbacks
        await asyncio.sleep(0)
