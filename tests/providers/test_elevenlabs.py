"""The ElevenLabs providers through the real SDK, against the loopback fake that speaks its protocol."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.elevenlabs_fake import API_KEY, FakeElevenLabs

from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.base import RecognitionHints, SpeechToText, TextToSpeech
from voicefsm.providers.elevenlabs_stt import ElevenLabsSpeechToText
from voicefsm.providers.elevenlabs_tts import ElevenLabsTextToSpeech
from voicefsm.settings import Settings

FRAME = 160
SILENCE = b"\xff" * FRAME


# -- text to speech ---------------------------------------------------------------------------


def make_tts(fake: FakeElevenLabs, **overrides: Any) -> ElevenLabsTextToSpeech:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "timeout_s": 2.0,
        "first_byte_timeout_s": 1.0,
    }
    options.update(overrides)
    return ElevenLabsTextToSpeech(**options)


@pytest.fixture
async def tts(elevenlabs_fake: FakeElevenLabs) -> AsyncIterator[ElevenLabsTextToSpeech]:
    synthesizer = make_tts(elevenlabs_fake)
    yield synthesizer
    await synthesizer.aclose()


async def speak(tts: ElevenLabsTextToSpeech, text: str = "Hello there, caller") -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


async def test_tts_streams_the_fakes_audio_as_it_arrives(
    elevenlabs_fake: FakeElevenLabs, tts: ElevenLabsTextToSpeech
) -> None:
    assert isinstance(tts, TextToSpeech)
    chunks = await speak(tts, "Hello there, caller")
    assert b"".join(chunks) == elevenlabs_fake.tts_audio
    # The audio comes as the network delivers it, not re-cut into 20 ms frames (the call frames it):
    # the fake sends pieces of 3 frames and 17 bytes, and no piece is split.
    pieces = -(-len(elevenlabs_fake.tts_audio) // (3 * FRAME + 17))
    assert len(chunks) <= pieces < len(elevenlabs_fake.tts_audio) // FRAME
    (request,) = elevenlabs_fake.tts_requests
    assert request.voice_id == "21m00Tcm4TlvDq8ikWAM"
    assert request.query["output_format"] == "ulaw_8000"
    assert request.body["text"] == "Hello there, caller"
    assert request.body["model_id"] == "eleven_flash_v2_5"
    assert request.api_key == API_KEY
    assert request.finished


async def test_tts_interrupted_mid_stream_closes_the_response(
    elevenlabs_fake: FakeElevenLabs, tts: ElevenLabsTextToSpeech
) -> None:
    elevenlabs_fake.tts_faults = ["endless"]
    received: list[bytes] = []
    playing = asyncio.Event()

    async def play() -> None:
        async for chunk in tts.synthesize("a very long story"):
            received.append(chunk)
            if len(received) == 3:
                playing.set()

    task = asyncio.create_task(play())
    async with asyncio.timeout(3):
        await playing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (request,) = elevenlabs_fake.tts_requests
    await elevenlabs_fake.wait_for(lambda: request.disconnected)
    assert not request.finished
    # The synthesizer is still usable after a barge-in.
    assert b"".join(await speak(tts)) == elevenlabs_fake.tts_audio


@pytest.mark.parametrize(
    ("fault", "status", "retryable", "hint"),
    [
        ("invalid_api_key", 401, False, "ELEVENLABS_API_KEY"),
        ("quota_exceeded", 401, False, "quota"),
        ("too_many_concurrent_requests", 429, True, "concurrent"),
        ("system_busy", 429, True, "busy"),
        ("server_error", 500, True, "try again"),
    ],
)
async def test_tts_http_errors_become_provider_errors(
    elevenlabs_fake: FakeElevenLabs,
    tts: ElevenLabsTextToSpeech,
    fault: str,
    status: int,
    retryable: bool,
    hint: str,
) -> None:
    elevenlabs_fake.tts_faults = [fault]
    with pytest.raises(ProviderError) as caught:
        await speak(tts)
    error = caught.value
    assert error.provider == "elevenlabs-tts"
    assert error.retryable is retryable
    assert f"HTTP {status}" in error.reason
    assert hint in error.reason
    assert "headers" not in str(error)  # the SDK's ApiError text (with headers) is not passed on


async def test_tts_wrong_key_is_not_retryable(elevenlabs_fake: FakeElevenLabs) -> None:
    tts = make_tts(elevenlabs_fake, api_key="wrong-key")
    try:
        with pytest.raises(ProviderError, match="invalid_api_key") as caught:
            await speak(tts)
    finally:
        await tts.aclose()
    assert caught.value.retryable is False
    assert elevenlabs_fake.tts_requests[0].api_key == "wrong-key"


async def test_tts_silent_server_fails_within_the_first_byte_deadline(
    elevenlabs_fake: FakeElevenLabs,
) -> None:
    elevenlabs_fake.tts_faults = ["hang"]
    tts = make_tts(elevenlabs_fake, first_byte_timeout_s=0.3, timeout_s=30.0)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError, match=r"no audio within 0\.3 s") as caught:
            await speak(tts)
    finally:
        await tts.aclose()
    assert time.monotonic() - started < 2.0
    assert caught.value.retryable is True


async def test_tts_truncated_stream_is_an_error(
    elevenlabs_fake: FakeElevenLabs, tts: ElevenLabsTextToSpeech
) -> None:
    elevenlabs_fake.tts_faults = ["truncate"]
    received: list[bytes] = []

    async def play() -> None:
        async for chunk in tts.synthesize("Hello"):
            received.append(chunk)

    with pytest.raises(ProviderError, match="cut off") as caught:
        await play()
    assert caught.value.retryable is True
    assert len(b"".join(received)) < len(elevenlabs_fake.tts_audio)


async def test_tts_empty_audio_is_an_error(
    elevenlabs_fake: FakeElevenLabs, tts: ElevenLabsTextToSpeech
) -> None:
    elevenlabs_fake.tts_faults = ["empty"]
    with pytest.raises(ProviderError, match="no audio"):
        await speak(tts)


async def test_tts_unreachable_server_is_a_retryable_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tts = ElevenLabsTextToSpeech(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=1.0)
    try:
        with pytest.raises(ProviderError, match="could not reach") as caught:
            await speak(tts)
    finally:
        await tts.aclose()
    assert caught.value.retryable is True


async def test_tts_refuses_empty_text_and_use_after_close(tts: ElevenLabsTextToSpeech) -> None:
    with pytest.raises(ProviderError, match="no text"):
        await speak(tts, "   ")
    await tts.aclose()
    await tts.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await speak(tts)


async def test_tts_from_settings(elevenlabs_fake: FakeElevenLabs) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        elevenlabs_api_key=API_KEY,
        elevenlabs_base_url=elevenlabs_fake.base_url,
        elevenlabs_voice_id="voice-from-settings",
        elevenlabs_model="eleven_turbo_v2_5",
    )
    tts = ElevenLabsTextToSpeech.from_settings(settings)
    try:
        assert b"".join(await speak(tts)) == elevenlabs_fake.tts_audio
    finally:
        await tts.aclose()
    (request,) = elevenlabs_fake.tts_requests
    assert request.voice_id == "voice-from-settings"
    assert request.body["model_id"] == "eleven_turbo_v2_5"
    with pytest.raises(ProviderUnavailable, match="ELEVENLABS_API_KEY"):
        ElevenLabsTextToSpeech.from_settings(Settings(_env_file=None, elevenlabs_api_key=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("factory", [ElevenLabsTextToSpeech, ElevenLabsSpeechToText])
def test_missing_sdk_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, factory: Callable[..., Any]
) -> None:
    monkeypatch.setitem(sys.modules, "elevenlabs.client", None)  # makes `import elevenlabs.client` fail
    with pytest.raises(ProviderUnavailable, match=r"pip install 'voicefsm\[elevenlabs\]'"):
        factory(api_key=API_KEY)


# -- speech to text ---------------------------------------------------------------------------


class Heard:
    """Collects what a recognizer reports, and lets a test wait for it."""

    def __init__(self, stt: ElevenLabsSpeechToText) -> None:
        self.committed: list[str] = []
        self.partials: list[str] = []
        self.errors: list[str] = []
        self.discarded: list[str] = []
        self._changed = asyncio.Event()
        stt.on_committed = self._collect(self.committed)
        stt.on_recognizing = self._collect(self.partials)
        stt.on_error = self._collect(self.errors)
        stt.on_discarded = self._collect(self.discarded)

    def _collect(self, into: list[str]) -> Callable[[str], None]:
        def callback(text: str) -> None:
            into.append(text)
            self._changed.set()

        return callback

    async def until(self, predicate: Callable[[], bool], within_s: float = 3.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def make_stt(fake: FakeElevenLabs, **overrides: Any) -> ElevenLabsSpeechToText:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "connect_timeout_s": 2.0,
        "close_timeout_s": 0.5,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    options.update(overrides)
    return ElevenLabsSpeechToText(**options)


def leftover_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since ``before`` that still run, except the fake server's (its fixture stops those)."""
    return {
        task
        for task in asyncio.all_tasks() - before
        if not task.done()
        and "uvicorn" not in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    }


def push(audio: asyncio.Queue[bytes | None], frames: int = 5) -> None:
    for _ in range(frames):
        audio.put_nowait(SILENCE)


def committed_sent(fake: FakeElevenLabs, text: str) -> bool:
    """The fake has sent ``text`` as a committed transcript on its first socket."""
    message = {"message_type": "committed_transcript", "text": text}
    return bool(fake.stt_sessions) and message in fake.stt_sessions[0].sent


def session_ended(fake: FakeElevenLabs, index: int = 0) -> bool:
    return len(fake.stt_sessions) > index and fake.stt_sessions[index].ended


async def test_stt_partials_and_committed_reach_the_callbacks(elevenlabs_fake: FakeElevenLabs) -> None:
    stt = make_stt(elevenlabs_fake, language_code="en", keyterms=["Bright Smile"])
    assert isinstance(stt, SpeechToText)
    heard = Heard(stt)
    stt.set_hints(RecognitionHints(("tuesday", "two o'clock", "a phrase far too long for a keyterm")))
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        elevenlabs_fake.say("book a table")
        push(audio)
        await heard.until(lambda: heard.committed == ["book a table"])
        assert heard.partials == ["book", "book a"]
        (session,) = elevenlabs_fake.stt_sessions
        assert session.api_key == API_KEY
        assert session.param("model_id") == "scribe_v2_realtime"
        assert session.param("audio_format") == "ulaw_8000"
        assert session.param("commit_strategy") == "vad"
        assert session.param("vad_silence_threshold_secs") == "0.8"
        assert session.param("vad_threshold") == "0.4"
        assert session.param("language_code") == "en"
        assert session.params("keyterms") == ["Bright Smile", "tuesday", "two o'clock"]
        assert bytes(session.audio) == SILENCE * 5
        audio.put_nowait(None)  # end of audio: the last utterance is committed by hand
        await elevenlabs_fake.wait_for(lambda: session.commits == 1)
        assert heard.errors == []
    finally:
        await stt.stop()


async def test_stt_discards_echo_while_speaking_and_just_after(elevenlabs_fake: FakeElevenLabs) -> None:
    now = [100.0]
    stt = make_stt(
        elevenlabs_fake, echo_window_s=0.4, discard_partials_while_speaking=True, clock=lambda: now[0]
    )
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        stt.set_speaking(True)
        elevenlabs_fake.say("echo one")
        push(audio)
        await heard.until(lambda: heard.discarded == ["echo one"])
        stt.set_speaking(False)
        now[0] += 0.3  # still inside the window after the agent stopped
        elevenlabs_fake.say("echo two")
        push(audio)
        await heard.until(lambda: heard.discarded == ["echo one", "echo two"])
        now[0] += 0.2  # past the window
        elevenlabs_fake.say("caller speaks")
        push(audio)
        await heard.until(lambda: heard.committed == ["caller speaks"])
        assert heard.partials == ["caller"]  # the echoes' partials were dropped too
        assert stt.discarded == 4  # two partials, two committed
    finally:
        await stt.stop()


async def test_stt_keeps_partials_while_speaking_for_barge_in_by_default(
    elevenlabs_fake: FakeElevenLabs,
) -> None:
    now = [100.0]
    stt = make_stt(elevenlabs_fake, clock=lambda: now[0])
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        stt.set_speaking(True)
        elevenlabs_fake.say("wait a second")
        push(audio)
        await heard.until(lambda: heard.discarded == ["wait a second"])
        assert heard.partials == ["wait", "wait a"]
        stt.set_speaking(False)
        now[0] += 1.0
        elevenlabs_fake.say("hello")
        push(audio)
        await heard.until(lambda: heard.committed == ["hello"])
    finally:
        await stt.stop()


async def test_stt_reconnects_after_1011_and_hears_the_next_utterance(
    elevenlabs_fake: FakeElevenLabs,
) -> None:
    elevenlabs_fake.stt_faults = ["close_1011_mid_utterance"]
    stt = make_stt(elevenlabs_fake)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        elevenlabs_fake.say("lost words", "next utterance")
        push(audio)
        await elevenlabs_fake.wait_for(lambda: session_ended(elevenlabs_fake))
        assert elevenlabs_fake.stt_sessions[0].server_close_code == 1011
        stt.set_hints(RecognitionHints(("yes", "no")))  # applies from the next socket on
        # Sent into the dying socket or buffered during the reconnect: either way the next socket
        # gets it, along with the uncommitted audio of the utterance the failure cut off.
        push(audio)
        await heard.until(lambda: heard.committed == ["next utterance"])
        assert heard.errors == []
        assert stt.reconnects == 1
        assert stt.sessions_opened == 2
        second = elevenlabs_fake.stt_sessions[1]
        assert bytes(second.audio) == SILENCE * 10
        assert second.params("keyterms") == ["yes", "no"]
    finally:
        await stt.stop()


async def test_stt_retry_budget_resets_after_a_session_that_heard_something(
    elevenlabs_fake: FakeElevenLabs,
) -> None:
    elevenlabs_fake.stt_faults = ["commit_then_1011", "commit_then_1011"]
    stt = make_stt(elevenlabs_fake, max_retries=1)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        elevenlabs_fake.say("one", "two", "three")
        for expected in (["one"], ["one", "two"], ["one", "two", "three"]):
            push(audio)
            await heard.until(lambda expected=expected: heard.committed == expected)
        assert heard.errors == []
        # Two failures, each after a session that heard something: more than max_retries=1 in all.
        assert stt.reconnects == 2
        # Audio the server had committed is never replayed; only the next utterance's frames move on.
        assert [len(session.audio) for session in elevenlabs_fake.stt_sessions] == [5 * FRAME] * 3
    finally:
        await stt.stop()


async def test_stt_session_time_limit_reconnects(elevenlabs_fake: FakeElevenLabs) -> None:
    elevenlabs_fake.stt_faults = ["session_time_limit_exceeded"]
    stt = make_stt(elevenlabs_fake)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        elevenlabs_fake.say("after the limit")
        push(audio)
        await elevenlabs_fake.wait_for(lambda: session_ended(elevenlabs_fake))
        push(audio)
        await heard.until(lambda: heard.committed == ["after the limit"])
        assert heard.errors == []
        assert elevenlabs_fake.stt_sessions[0].server_close_code == 1000
    finally:
        await stt.stop()


@pytest.mark.parametrize(
    ("api_key", "fault", "hint"),
    [
        ("wrong-key", None, "ELEVENLABS_API_KEY"),
        (API_KEY, "quota_exceeded", "quota"),
        (API_KEY, "rate_limited", "concurrency"),
    ],
)
async def test_stt_terminal_error_is_reported_once_without_retry(
    elevenlabs_fake: FakeElevenLabs, api_key: str, fault: str | None, hint: str
) -> None:
    elevenlabs_fake.stt_faults = [fault]
    stt = make_stt(elevenlabs_fake, api_key=api_key)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        async with asyncio.timeout(3):
            await stt.finished.wait()
        assert len(heard.errors) == 1
        assert hint in heard.errors[0]
        assert stt.error is not None
        assert stt.error.retryable is False
        assert len(elevenlabs_fake.stt_sessions) == 1
        assert elevenlabs_fake.stt_sessions[0].server_close_code == 1008
        assert stt.reconnects == 0
    finally:
        await stt.stop()
    assert len(heard.errors) == 1


async def test_stt_gives_up_after_max_retries_and_reports_once(elevenlabs_fake: FakeElevenLabs) -> None:
    elevenlabs_fake.stt_default_fault = "transcriber_error"
    stt = make_stt(elevenlabs_fake, max_retries=2)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    await stt.start(audio)
    try:
        async with asyncio.timeout(3):
            await stt.finished.wait()
        assert len(elevenlabs_fake.stt_sessions) == 3  # the first try and two retries
        assert len(heard.errors) == 1
        assert "3 times in a row" in heard.errors[0]
        assert "transcriber_error" in heard.errors[0]
    finally:
        await stt.stop()
    assert len(heard.errors) == 1


async def test_stt_unreachable_server_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stt = ElevenLabsSpeechToText(
        api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", max_retries=1, backoff_base_s=0.01
    )
    heard = Heard(stt)
    await stt.start(asyncio.Queue())
    try:
        async with asyncio.timeout(3):
            await stt.finished.wait()
        assert stt.reconnects == 1
        assert len(heard.errors) == 1
        assert "could not connect" in heard.errors[0]
        assert "2 times in a row" in heard.errors[0]
    finally:
        await stt.stop()


async def test_stt_connect_deadline_when_the_handshake_never_completes(
    elevenlabs_fake: FakeElevenLabs,
) -> None:
    elevenlabs_fake.stt_default_fault = "hang_handshake"
    stt = make_stt(elevenlabs_fake, connect_timeout_s=0.2, max_retries=0)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    started = time.monotonic()
    await stt.start(audio)
    try:
        await heard.until(lambda: len(heard.errors) == 1, within_s=2.0)
        assert time.monotonic() - started < 1.5
        assert "did not complete the handshake within 0.2 s" in heard.errors[0]
    finally:
        await stt.stop()


async def test_stt_stop_while_connecting_returns_promptly(elevenlabs_fake: FakeElevenLabs) -> None:
    elevenlabs_fake.stt_default_fault = "hang_handshake"
    stt = make_stt(elevenlabs_fake, connect_timeout_s=30.0)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    before = asyncio.all_tasks()
    await stt.start(audio)
    await elevenlabs_fake.wait_for(lambda: len(elevenlabs_fake.stt_sessions) == 1)
    started = time.monotonic()
    await stt.stop()
    assert time.monotonic() - started < 1.0
    assert not stt.running
    assert heard.errors == []
    assert leftover_tasks(before) == set()


async def test_stt_stop_leaves_no_task_and_no_socket(elevenlabs_fake: FakeElevenLabs) -> None:
    stt = make_stt(elevenlabs_fake)
    heard = Heard(stt)
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    before = asyncio.all_tasks()
    await stt.start(audio)
    push(audio)
    await elevenlabs_fake.wait_for(
        lambda: bool(elevenlabs_fake.stt_sessions) and len(elevenlabs_fake.stt_sessions[0].audio) == 5 * FRAME
    )
    await stt.stop()
    await stt.stop()  # idempotent
    session = elevenlabs_fake.stt_sessions[0]
    await elevenlabs_fake.wait_for(lambda: session.ended)
    assert session.client_close_code == 1000  # we closed the socket, cleanly
    assert not stt.running
    assert stt.finished.is_set()
    assert heard.errors == []
    assert leftover_tasks(before) == set()
    with pytest.raises(RuntimeError):
        await stt.start(audio)


def test_stt_from_settings_maps_every_field() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        elevenlabs_api_key=API_KEY,
        elevenlabs_base_url="http://127.0.0.1:9",
        stt_language_code="fi",
        stt_vad_silence_threshold_s=1.2,
        stt_vad_threshold=0.6,
    )
    stt = ElevenLabsSpeechToText.from_settings(settings)
    options = stt.connect_options()
    assert options["model_id"] == "scribe_v2_realtime"
    assert options["language_code"] == "fi"
    assert options["vad_silence_threshold_secs"] == 1.2
    assert options["vad_threshold"] == 0.6
    assert options["sample_rate"] == 8000
    assert stt.base_url == "http://127.0.0.1:9"
    with pytest.raises(ProviderUnavailable, match="ELEVENLABS_API_KEY"):
        ElevenLabsSpeechToText.from_settings(Settings(_env_file=None, elevenlabs_api_key=None))  # type: ignore[call-arg]
