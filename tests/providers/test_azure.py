"""Azure STT and TTS through the real Speech SDK, against the loopback USP fake in fakes/azure_fake.py."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.azure_fake import API_KEY, FakeAzureSpeech, serve_azure_fake

from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.azure import AzureSpeechError, speech_config
from voicefsm.providers.azure_stt import AzureSpeechToText
from voicefsm.providers.azure_tts import AzureTextToSpeech
from voicefsm.providers.base import SpeechToText, TextToSpeech, hints_from_phrases
from voicefsm.settings import Settings

FRAME = bytes([0xFF]) * 160  # mu-law silence
WAIT_S = 5.0  # upper bound for anything the fake should make happen at once


@pytest.fixture
async def fake() -> AsyncIterator[FakeAzureSpeech]:
    async with serve_azure_fake() as served:
        yield served


class Heard:
    """Collects a recognizer's callbacks, and the threads they ran on."""

    def __init__(self, stt: AzureSpeechToText) -> None:
        self.partials: list[str] = []
        self.finals: list[str] = []
        self.errors: list[str] = []
        self.discarded: list[str] = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()
        stt.on_recognizing = self._sink(self.partials)
        stt.on_committed = self._sink(self.finals)
        stt.on_error = self._sink(self.errors)
        stt.on_discarded = self._sink(self.discarded)

    def _sink(self, into: list[str]) -> Callable[[str], None]:
        def callback(text: str) -> None:
            self.threads.add(threading.get_ident())
            into.append(text)
            self.changed.set()

        return callback

    async def until(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def make_stt(fake: FakeAzureSpeech) -> AsyncIterator[Callable[..., AzureSpeechToText]]:
    built: list[AzureSpeechToText] = []

    def make(**options: Any) -> AzureSpeechToText:
        options = {
            "key": API_KEY,
            "host": fake.host,
            "connect_timeout_s": 1.0,
            "stop_timeout_s": 1.0,
            **options,
        }
        stt = AzureSpeechToText(**options)
        built.append(stt)
        return stt

    yield make
    for stt in built:
        await stt.stop()
    await threads_end(timeout_s=3.0)  # a stop that overran its deadline still ends soon after


def azure_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("voicefsm-azure")]


async def threads_end(timeout_s: float) -> None:
    """Every helper thread the providers started has ended within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for thread in azure_threads():
        await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
    assert not azure_threads()


@contextlib.asynccontextmanager
async def caller(audio: asyncio.Queue[bytes | None]) -> AsyncIterator[None]:
    """Puts a frame of silence on ``audio`` every 20 ms, as a phone call does, until the block ends."""

    async def talk() -> None:
        while True:
            audio.put_nowait(FRAME)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(talk(), name="caller")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def frames(count: int) -> asyncio.Queue[bytes | None]:
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    for _ in range(count):
        audio.put_nowait(FRAME)
    return audio


# -- speech to text ---------------------------------------------------------------------------


async def test_partials_and_finals_reach_the_callbacks_on_the_loop_thread(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    stt = make_stt(language="en-GB", silence_timeout_ms=1200)
    assert isinstance(stt, SpeechToText)
    heard = Heard(stt)
    fake.say("Book a table for two.")
    fake.no_match()
    fake.say("Yes please.")
    audio = frames(60)
    await stt.start(audio)
    await heard.until(lambda: len(heard.finals) == 2)
    assert heard.finals == ["Book a table for two.", "Yes please."]  # the NoMatch in between is ignored
    assert heard.partials == [
        "book",
        "book a",
        "book a table",
        "book a table for",
        "book a table for two",
        "yes",
        "yes please",
    ]
    assert heard.threads == {threading.get_ident()}
    assert heard.errors == []

    session = fake.stt_sessions[0]
    assert session.query == "language=en-GB"
    # the push stream declares 8 kHz 8-bit mono mu-law (WAVE format tag 7): nothing is transcoded
    riff = session.riff_header
    assert int.from_bytes(riff[20:22], "little") == 7
    assert int.from_bytes(riff[24:28], "little") == 8000
    assert int.from_bytes(riff[34:36], "little") == 8
    segmentation = session.contexts[0]["phraseDetection"]["CONVERSATION"]["segmentation"]
    assert segmentation["segmentationSilenceTimeoutMs"] == 1200

    audio.put_nowait(None)  # end of audio: recognition ends without an error
    async with asyncio.timeout(WAIT_S):
        await stt.finished.wait()
    assert stt.error is None
    assert session.audio_bytes == 60 * len(FRAME)
    assert session.end_of_stream


async def test_hints_become_the_phrase_list(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    stt = make_stt(phrases=["Acme"])
    heard = Heard(stt)
    stt.set_hints(hints_from_phrases(["Table for two"], open_vocabulary=True))
    fake.say("Table for two.")
    audio = frames(0)
    await stt.start(audio)
    async with caller(audio):
        await heard.until(lambda: len(heard.finals) == 1)
        stt.set_hints(hints_from_phrases(["Monday", "Tuesday"], open_vocabulary=False))
        fake.say("Tuesday.")
        await heard.until(lambda: len(heard.finals) == 2)

    def phrases(context: dict[str, Any]) -> list[str]:
        return [item["Text"] for group in context["dgi"]["Groups"] for item in group["Items"]]

    contexts = fake.stt_sessions[0].contexts
    assert phrases(contexts[0]) == ["Acme", "table for two"]
    assert phrases(contexts[-1]) == ["Acme", "monday", "tuesday"]  # the service gets them at its next turn


async def test_finals_heard_while_the_agent_speaks_are_discarded_as_echo(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    stt = make_stt(echo_window_s=60.0)
    heard = Heard(stt)
    fake.say("Hello this is the agent.")
    stt.set_speaking(True)
    await stt.start(frames(20))
    await heard.until(lambda: len(heard.discarded) == 1)
    assert heard.finals == []
    assert heard.partials[-1] == "hello this is the agent"  # partials still pass: they allow barge-in
    stt.set_speaking(False)  # the window stays open echo_window_s longer
    assert stt.discarded == 1


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        ("reject_401", "AuthenticationFailure", False),
        ("reject_403", "AuthenticationFailure", False),
        ("reject_429", "TooManyRequests", True),
        ("reject_503", "ServiceUnavailable", True),
    ],
)
async def test_a_refused_handshake_becomes_one_error_quickly(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText], fault: str, code: str, retryable: bool
) -> None:
    fake.stt_faults.extend([fault] * 10)  # every attempt, so the SDK's own retries fail too
    stt = make_stt(connect_timeout_s=5.0)
    heard = Heard(stt)
    started = time.monotonic()
    await stt.start(frames(10))
    await heard.until(lambda: bool(heard.errors), timeout_s=3.0)
    assert time.monotonic() - started < 3.0
    assert isinstance(stt.error, AzureSpeechError)
    assert stt.error.error_code == code
    assert stt.error.retryable is retryable
    assert heard.errors == [str(stt.error)]
    assert code in heard.errors[0]
    assert fault.removeprefix("reject_") in stt.error.details
    assert heard.threads == {threading.get_ident()}
    assert stt.finished.is_set()


async def test_a_bad_key_says_which_setting_to_check(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    stt = make_stt(key="wrong-key")
    heard = Heard(stt)
    await stt.start(frames(10))
    await heard.until(lambda: bool(heard.errors))
    assert "AuthenticationFailure" in heard.errors[0]
    assert "AZURE_SPEECH_KEY" in heard.errors[0]


async def test_one_1011_is_survived_by_the_sdk_reconnecting(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    fake.stt_faults.append("close_1011")
    fake.say("Book a table.")  # cut off mid-utterance by the 1011
    fake.say("Yes please.")
    stt = make_stt()
    heard = Heard(stt)
    audio = frames(0)
    await stt.start(audio)
    async with caller(audio):  # after a reconnect the SDK sends again when new audio comes
        await heard.until(lambda: heard.finals == ["Yes please."])
    assert heard.errors == []
    assert stt.connections == 2
    assert len(fake.stt_sessions) == 2


async def test_a_1011_on_every_connection_becomes_an_error(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    fake.stt_faults.extend(["close_1011"] * 20)
    stt = make_stt()
    heard = Heard(stt)
    audio = frames(0)
    await stt.start(audio)
    async with caller(audio):
        await heard.until(lambda: bool(heard.errors))
    assert isinstance(stt.error, AzureSpeechError)
    assert stt.error.error_code == "ServiceError"
    assert "1011" in stt.error.details
    assert len(heard.errors) == 1


async def test_a_silent_server_becomes_an_error_within_the_watchdog_deadline() -> None:
    async with serve_azure_fake() as fake:
        fake.stt_faults.append("silent")  # accepts TCP, never answers the upgrade
        stt = AzureSpeechToText(key=API_KEY, host=fake.host, connect_timeout_s=1.0, stop_timeout_s=0.5)
        heard = Heard(stt)
        started = time.monotonic()
        await stt.start(frames(50))
        await heard.until(lambda: bool(heard.errors), timeout_s=3.0)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 2.0
        assert isinstance(stt.error, AzureSpeechError)
        assert stt.error.error_code == "ServiceTimeout"
        assert "no connection" in heard.errors[0]

        # The SDK needs ~10 s to stop against this server; stop() returns at its own deadline...
        started = time.monotonic()
        await stt.stop()
        assert time.monotonic() - started < 1.0
        assert not stt.running
        assert azure_threads()  # ...leaving the SDK's stop to finish in a thread of its own
    # which ends soon after the server goes away, rather than blocking anything meanwhile.
    await threads_end(timeout_s=5.0)


async def test_a_server_that_never_answers_audio_is_caught_by_the_result_watchdog(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    fake.stt_faults.append("mute")  # upgrade accepted, then nothing
    stt = make_stt(result_timeout_s=1.0, stop_timeout_s=0.5)
    heard = Heard(stt)
    started = time.monotonic()
    await stt.start(frames(50))
    await heard.until(lambda: bool(heard.errors), timeout_s=3.0)
    assert time.monotonic() - started < 2.0
    assert stt.connections == 1
    assert "sent nothing" in heard.errors[0]


async def test_stop_is_prompt_idempotent_and_closes_the_socket(
    fake: FakeAzureSpeech, make_stt: Callable[..., AzureSpeechToText]
) -> None:
    stt = make_stt()
    heard = Heard(stt)
    audio = frames(5)
    await stt.start(audio)
    assert stt.running
    # The SDK opens its socket in its own thread after start() returns: stop the session once it is
    # open (and has audio), which is the case this test is about.
    await fake.wait_for(lambda: bool(fake.stt_sessions), within_s=WAIT_S)
    started = time.monotonic()
    await asyncio.gather(stt.stop(), stt.stop())
    assert time.monotonic() - started < 1.0
    await stt.stop()
    assert not stt.running
    async with asyncio.timeout(WAIT_S):
        await fake.stt_sessions[0].closed.wait()  # the socket was closed, not left to the SDK
    audio.put_nowait(FRAME)
    assert audio.qsize() == 1  # the feeder is gone
    assert heard.errors == []  # the SDK's own "connection closed" after a stop is not an error


async def test_start_twice_is_a_programming_error(make_stt: Callable[..., AzureSpeechToText]) -> None:
    stt = make_stt()
    await stt.start(frames(0))
    with pytest.raises(RuntimeError, match="twice"):
        await stt.start(frames(0))


# -- text to speech ---------------------------------------------------------------------------


@pytest.fixture
async def make_tts(fake: FakeAzureSpeech) -> AsyncIterator[Callable[..., AzureTextToSpeech]]:
    built: list[AzureTextToSpeech] = []

    def make(**options: Any) -> AzureTextToSpeech:
        options = {
            "key": API_KEY,
            "host": fake.host,
            "first_chunk_timeout_s": 1.0,
            "stop_timeout_s": 1.0,
            **options,
        }
        tts = AzureTextToSpeech(**options)
        built.append(tts)
        return tts

    yield make
    for tts in built:
        await tts.aclose()
    await threads_end(timeout_s=3.0)


async def collect(tts: AzureTextToSpeech, text: str) -> bytes:
    async with contextlib.aclosing(tts.synthesize(text)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_audio_is_streamed_as_it_is_produced(
    fake: FakeAzureSpeech, make_tts: Callable[..., AzureTextToSpeech]
) -> None:
    fake.tts_chunk_delay_s = 0.05
    tts = make_tts(voice="en-GB-RyanNeural")
    assert isinstance(tts, TextToSpeech)
    received = bytearray()
    async with contextlib.aclosing(tts.synthesize("Tom & Jerry <3")) as chunks:
        async for chunk in chunks:
            if not received:
                assert not fake.tts_requests[0].finished  # the first chunk came before the last was sent
            received += chunk
    assert bytes(received) == fake.tts_audio
    request = fake.tts_requests[0]
    assert request.context["synthesis"]["audio"]["outputFormat"] == "raw-8khz-8bit-mono-mulaw"
    assert "xml:lang='en-GB'" in request.ssml
    assert "<voice name='en-GB-RyanNeural'>Tom &amp; Jerry &lt;3</voice>" in request.ssml

    assert await collect(tts, "Again.") == fake.tts_audio
    assert tts.synthesizers_built == 1  # one warm synthesizer serves prompt after prompt


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        ("reject_401", "AuthenticationFailure", False),
        ("reject_429", "TooManyRequests", True),
        ("reject_500", "ServiceError", True),
        ("close_1011", "ServiceError", True),
        ("truncate", "ConnectionFailure", True),
    ],
)
async def test_service_failures_become_provider_errors(
    fake: FakeAzureSpeech, make_tts: Callable[..., AzureTextToSpeech], fault: str, code: str, retryable: bool
) -> None:
    fake.tts_faults.extend([fault] * 2)  # the SDK retries a refused upgrade once
    tts = make_tts()
    received = bytearray()

    async def speak() -> None:
        async with contextlib.aclosing(tts.synthesize("Hello.")) as chunks:
            async for chunk in chunks:
                received.extend(chunk)

    with pytest.raises(ProviderError) as caught:
        await speak()
    error = caught.value
    assert isinstance(error, AzureSpeechError)
    assert error.error_code == code
    assert error.retryable is retryable
    assert code in str(error)
    if fault in ("close_1011", "truncate"):
        assert 0 < len(received) < len(fake.tts_audio)  # the audio before the cut was streamed
    fake.tts_faults.clear()
    assert await collect(tts, "Recovered.") == fake.tts_audio


@pytest.mark.parametrize("fault", ["silent", "mute"])
async def test_a_server_that_sends_no_audio_fails_at_the_first_chunk_deadline(
    fake: FakeAzureSpeech, make_tts: Callable[..., AzureTextToSpeech], fault: str
) -> None:
    fake.tts_faults.append(fault)
    tts = make_tts(first_chunk_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(AzureSpeechError, match=r"no audio within 0\.5 s") as caught:
        await collect(tts, "Hello.")
    assert 0.45 <= time.monotonic() - started < 1.5
    assert caught.value.error_code == "ServiceTimeout"
    assert caught.value.retryable
    assert await collect(tts, "Next.") == fake.tts_audio  # the next prompt is not stuck behind it


async def test_cancelling_mid_stream_stops_synthesis_promptly(
    fake: FakeAzureSpeech, make_tts: Callable[..., AzureTextToSpeech]
) -> None:
    fake.tts_chunk_delay_s = 0.2
    tts = make_tts()
    first_chunk = asyncio.Event()

    async def speak() -> None:  # as Call.speak consumes it
        async with contextlib.aclosing(tts.synthesize("A long prompt.")) as chunks:
            async for _ in chunks:
                first_chunk.set()

    task = asyncio.create_task(speak())
    async with asyncio.timeout(WAIT_S):
        await first_chunk.wait()
    started = time.monotonic()
    task.cancel()  # barge-in
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert not fake.tts_requests[0].finished

    fake.tts_chunk_delay_s = 0.0
    assert await collect(tts, "Next.") == fake.tts_audio
    assert tts.synthesizers_built == 1  # the SDK confirmed the stop, so the synthesizer was kept


async def test_leaving_the_iteration_early_stops_synthesis(
    fake: FakeAzureSpeech, make_tts: Callable[..., AzureTextToSpeech]
) -> None:
    fake.tts_chunk_delay_s = 0.2
    tts = make_tts()
    async with contextlib.aclosing(tts.synthesize("A long prompt.")) as chunks:
        async for _ in chunks:
            break
    assert not fake.tts_requests[0].finished
    fake.tts_chunk_delay_s = 0.0
    assert await collect(tts, "Next.") == fake.tts_audio


async def test_closed_synthesizer_and_empty_text_are_refused(
    make_tts: Callable[..., AzureTextToSpeech],
) -> None:
    tts = make_tts()
    with pytest.raises(ProviderError, match="no text"):
        await collect(tts, "  ")
    await tts.aclose()
    await tts.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await collect(tts, "Hello.")


# -- construction -------------------------------------------------------------------------------


async def test_endpoint_wins_over_host(fake: FakeAzureSpeech) -> None:
    settings = Settings(
        azure_speech_key=API_KEY,
        azure_speech_endpoint=f"{fake.host}/cognitiveservices/websocket/v1",
        azure_speech_host="ws://127.0.0.1:9",  # nothing listens there
        azure_tts_voice="fi-FI-NooraNeural",
    )
    tts = AzureTextToSpeech.from_settings(settings)
    try:
        assert await collect(tts, "Hei.") == fake.tts_audio
    finally:
        await tts.aclose()
    assert "<voice name='fi-FI-NooraNeural'>" in fake.tts_requests[0].ssml


@pytest.mark.parametrize(
    ("endpoint", "host", "used"),
    [
        ("wss://e.example/speech", "ws://127.0.0.1:9", "endpoint"),
        (None, "ws://127.0.0.1:9", "host"),
        (None, None, "region"),
    ],
)
def test_endpoint_then_host_then_region(endpoint: str | None, host: str | None, used: str) -> None:
    import azure.cognitiveservices.speech as speechsdk

    config = speech_config(speechsdk, "test", key=API_KEY, region="westeurope", host=host, endpoint=endpoint)
    expected = {"endpoint": endpoint, "host": host, "region": "westeurope"}[used]
    properties = {
        "endpoint": speechsdk.PropertyId.SpeechServiceConnection_Endpoint,
        "host": speechsdk.PropertyId.SpeechServiceConnection_Host,
        "region": speechsdk.PropertyId.SpeechServiceConnection_Region,
    }
    assert {name: config.get_property(prop) for name, prop in properties.items()} == {
        name: expected if name == used else "" for name in properties
    }


def test_missing_key_or_sdk_is_reported_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderUnavailable, match="AZURE_SPEECH_KEY"):
        AzureSpeechToText.from_settings(Settings(azure_speech_key=None))
    with pytest.raises(ProviderUnavailable, match="AZURE_SPEECH_KEY"):
        AzureTextToSpeech.from_settings(Settings(azure_speech_key=None))
    monkeypatch.setitem(sys.modules, "azure.cognitiveservices.speech", None)  # as if not installed
    with pytest.raises(ProviderUnavailable, match=r"pip install 'voicefsm\[azure\]'"):
        AzureSpeechToText(key=API_KEY, region="westeurope")
    with pytest.raises(ProviderUnavailable, match=r"pip install 'voicefsm\[azure\]'"):
        AzureTextToSpeech(key=API_KEY, region="westeurope")
