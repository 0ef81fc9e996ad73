"""Fault matrix 25-34 (reliability.md §4): the speech providers fail under a served call.

The providers are the product's real clients (the ElevenLabs and Azure SDKs, behind the
production deadline/retry/fallback wrapper) talking to the loopback fakes in tests/fakes, which
speak the services' real wire protocols; the caller is the fake Twilio over a real WebSocket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.azure_fake import API_KEY as AZURE_KEY
from fakes.azure_fake import FakeAzureSpeech, serve_azure_fake
from fakes.elevenlabs_fake import API_KEY, FakeElevenLabs, SttSession, serve_fake
from fastapi import WebSocket
from harness import (
    APOLOGY,
    FRAME,
    GIVE_UP,
    GOODBYE,
    GREETING,
    QUESTION,
    Line,
    QuickFaultLine,
    eventually,
    served_line,
)
from websockets.exceptions import ConnectionClosed

from voicefsm.providers.azure_tts import AzureTextToSpeech
from voicefsm.providers.base import SpeechToText, TextToSpeech
from voicefsm.providers.elevenlabs_stt import ElevenLabsSpeechToText
from voicefsm.providers.elevenlabs_tts import ElevenLabsTextToSpeech
from voicefsm.providers.fallback import ResilientTextToSpeech
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.telephony.twilio.client import TwilioStreamClient

NAME = "Ada Lovelace"
ALL_PROMPTS = [GREETING, QUESTION, GOODBYE]


@pytest.fixture
async def eleven() -> AsyncIterator[FakeElevenLabs]:
    async with serve_fake(FakeElevenLabs()) as fake:
        yield fake


def eleven_stt(fake: FakeElevenLabs, **options: Any) -> Callable[[], SpeechToText]:
    def make() -> SpeechToText:
        settings: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": fake.base_url,
            "echo_window_s": 0.0,
            "connect_timeout_s": 2.0,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
            "close_timeout_s": 0.5,
            **options,
        }
        return ElevenLabsSpeechToText(**settings)

    return make


def eleven_tts(
    fake: FakeElevenLabs, *, fallback: bool = True, deadline_s: float = 5.0
) -> Callable[[], TextToSpeech]:
    def make() -> TextToSpeech:
        primary = ElevenLabsTextToSpeech(
            api_key=API_KEY, base_url=fake.base_url, timeout_s=deadline_s * 2, first_byte_timeout_s=deadline_s
        )
        return ResilientTextToSpeech(
            primary,
            ScriptedTextToSpeech if fallback else None,
            deadline_s=deadline_s,
            primary_name="elevenlabs",
            fallback_name="local",
        )

    return make


def sockets_closed(fake: FakeElevenLabs) -> None:
    """Every recognizer socket the fake accepted has ended, and no synthesis is still streaming."""
    assert all(session.ended for session in fake.stt_sessions), "a recognizer socket is still open"
    assert all(r.finished or r.disconnected or r.fault for r in fake.tts_requests), "a synthesis is streaming"


async def speak_name(fake: FakeElevenLabs, twilio: TwilioStreamClient, name: str = NAME) -> None:
    """After the question, the caller says ``name``: the fake hears it once enough audio has come."""
    await twilio.wait_until(lambda: any(m.startswith("ask_name") for m in twilio.played_marks))
    fake.say(name)
    for _ in range(10):
        await twilio.send_media(FRAME)


async def stream_until(twilio: TwilioStreamClient, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Send line audio (20 ms frames, paced) until ``done()``, as a phone line always does."""
    async with asyncio.timeout(timeout_s):
        while not done() and not twilio.closed:
            try:
                await twilio.stream_audio(FRAME * 5, realtime=True)
            except ConnectionClosed:
                return  # the server ended the call meanwhile


def elevenlabs_audio(fake: FakeElevenLabs, prompts: int) -> int:
    return len(fake.tts_audio) * prompts


# -- 25-28: the recognizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", ["auth_error", "bad_key"])
async def test_fault_25_stt_refuses_the_connection_at_call_start(
    tmp_path: Path, eleven: FakeElevenLabs, refusal: str
) -> None:
    options: dict[str, Any] = {"api_key": "not-the-key"} if refusal == "bad_key" else {}
    if refusal == "auth_error":
        eleven.stt_faults.append("auth_error")
    async with served_line(tmp_path, stt_factory=eleven_stt(eleven, **options)) as line:
        twilio = line.client()
        await twilio.open()
        record = await line.clean_end(
            twilio, outcome="error", heard=[GREETING, APOLOGY]
        )  # the fallback prompt
        assert len(eleven.stt_sessions) == 1  # not retried
        assert [error.kind for error in record.errors] == ["stt"]
        assert "auth_error" in record.errors[0].message
        sockets_closed(eleven)


async def test_fault_26_stt_socket_closed_mid_call_reconnects_with_the_audio(
    tmp_path: Path, eleven: FakeElevenLabs
) -> None:
    eleven.stt_faults.extend(["close_1011_mid_utterance"])
    async with served_line(tmp_path, stt_factory=eleven_stt(eleven)) as line:
        twilio = line.client()
        await twilio.open()
        await speak_name(eleven, twilio)
        await stream_until(
            twilio, lambda: len(eleven.stt_sessions) >= 2 and eleven.stt_sessions[1].commits >= 0
        )
        eleven.say(NAME)  # the first socket died mid-utterance; the replayed audio is heard on the next
        await stream_until(twilio, lambda: twilio.call_sid in line.ended)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        assert [s.server_close_code for s in eleven.stt_sessions[:1]] == [1011]
        assert len(eleven.stt_sessions[1].audio) >= eleven.utterance_audio_bytes  # the replay
        recognizer = line.stts[0]
        assert isinstance(recognizer, ElevenLabsSpeechToText) and recognizer.reconnects == 1
        sockets_closed(eleven)


async def test_fault_26_stt_retries_run_out_then_a_clean_end(tmp_path: Path, eleven: FakeElevenLabs) -> None:
    eleven.stt_default_fault = "close_1011"
    async with served_line(tmp_path, stt_factory=eleven_stt(eleven, max_retries=2)) as line:
        twilio = line.client()
        await twilio.open()
        await stream_until(twilio, lambda: twilio.call_sid in line.ended, timeout_s=10)
        record = await line.clean_end(twilio, outcome="error", heard=[GREETING, QUESTION, APOLOGY])
        assert len(eleven.stt_sessions) == 3  # the first and two retries, with backoff
        assert "gave up" in record.errors[0].message
        sockets_closed(eleven)


async def test_fault_27_stt_connected_but_never_answering(tmp_path: Path, eleven: FakeElevenLabs) -> None:
    async with served_line(tmp_path, flow=QuickFaultLine, stt_factory=eleven_stt(eleven)) as line:
        twilio = line.client()
        await twilio.open()
        await stream_until(twilio, lambda: twilio.call_sid in line.ended)  # audio flows, nothing is heard
        await line.clean_end(twilio, outcome="no_input", heard=[GREETING, QUESTION, GIVE_UP])
        assert len(eleven.stt_sessions[0].audio) > 0
        sockets_closed(eleven)


class ChattyElevenLabs(FakeElevenLabs):
    """Sends messages the protocol does not have (and some that are not JSON) before each session."""

    async def _stt_session(self, ws: WebSocket, session: SttSession) -> None:
        if session.fault == "chatty":
            await ws.send_text("not json at all {")
            await ws.send_text(json.dumps({"message_type": "brand_new_event", "x": 1}))
            await ws.send_text(json.dumps({"message_type": "partial_transcript", "text": 42}))
            await ws.send_text(json.dumps({"no_type": True}))
            session.fault = None
        await super()._stt_session(ws, session)


async def test_fault_28_stt_sends_malformed_or_unknown_messages(tmp_path: Path) -> None:
    fake = ChattyElevenLabs()
    fake.stt_faults.append("chatty")
    async with serve_fake(fake), served_line(tmp_path, stt_factory=eleven_stt(fake)) as line:
        twilio = line.client()
        await twilio.open()
        await speak_name(fake, twilio)
        await stream_until(twilio, lambda: twilio.call_sid in line.ended)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        recognizer = line.stts[0]
        assert isinstance(recognizer, ElevenLabsSpeechToText)
        assert recognizer.messages_ignored >= 1  # counted
        assert recognizer.reconnects == 0 and len(fake.stt_sessions) == 1  # ignored, not fatal
        sockets_closed(fake)


# -- 29-34: the synthesizer ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["server_error", "system_busy"])
async def test_fault_29_tts_http_500_or_429(tmp_path: Path, eleven: FakeElevenLabs, fault: str) -> None:
    eleven.tts_faults.extend([fault, fault])  # the first try and its retry fail; the fallback voice speaks
    async with served_line(tmp_path, tts_factory=eleven_tts(eleven)) as line:
        twilio = line.client()
        await twilio.open()
        await line.wait_stt()
        await twilio.wait_until(lambda: any(m.startswith("ask_name") for m in twilio.played_marks))
        line.stt().say(NAME, partials=False)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        tts = line.ttss[0]
        assert isinstance(tts, ResilientTextToSpeech)
        assert [kind for kind, _ in tts.events] == ["retry", "fallback"]
        local = ScriptedTextToSpeech().audio_bytes_for(GREETING)
        assert len(twilio.agent_audio) == local + elevenlabs_audio(eleven, 2)
        sockets_closed(eleven)


async def test_fault_29_tts_failing_everywhere_leaves_speaking(
    tmp_path: Path, eleven: FakeElevenLabs
) -> None:
    eleven.tts_faults.extend(["server_error"] * 8)
    async with served_line(tmp_path, tts_factory=eleven_tts(eleven, fallback=False)) as line:
        twilio = line.client()
        await twilio.open()
        record = await line.clean_end(twilio, outcome="error", heard=[])
        assert record.final_state == "failed" and "tts" in {error.kind for error in record.errors}
        assert len(eleven.tts_requests) == 4  # the greeting and its retry, the apology and its retry
        sockets_closed(eleven)


async def test_fault_30_tts_hangs_before_the_first_byte(tmp_path: Path, eleven: FakeElevenLabs) -> None:
    eleven.tts_faults.extend(["hang", "hang"])
    async with served_line(tmp_path, tts_factory=eleven_tts(eleven, deadline_s=1.0)) as line:
        twilio = line.client()
        await twilio.open()
        await line.wait_stt()
        await twilio.wait_until(
            lambda: any(m.startswith("ask_name") for m in twilio.played_marks), timeout_s=8
        )
        eleven.release.set()  # the fake's own handlers stop hanging (ours gave up on them long ago)
        line.stt().say(NAME, partials=False)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        tts = line.ttss[0]
        assert isinstance(tts, ResilientTextToSpeech)
        # The greeting: its first byte never came, twice; the fallback voice said it. (Later prompts
        # have the same 1 s deadline; a very loaded machine may add events after these two.)
        assert [kind for kind, _ in tts.events[:2]] == ["retry", "fallback"]
        assert all("no audio within" in reason for _, reason in tts.events[:2])


@pytest.mark.parametrize("fault", ["truncate", "empty"])
async def test_fault_31_tts_stream_cut_short_or_empty(
    tmp_path: Path, eleven: FakeElevenLabs, fault: str
) -> None:
    eleven.tts_faults.append(fault)
    async with served_line(tmp_path, tts_factory=eleven_tts(eleven)) as line:
        twilio = line.client()
        await twilio.open()
        await line.wait_stt()
        await twilio.wait_until(lambda: any(m.startswith("ask_name") for m in twilio.played_marks))
        line.stt().say(NAME, partials=False)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        # No garbage: whole frames only; a cut prompt is retried from its start.
        cut = len(eleven.tts_audio) // 2 // 160 * 160 if fault == "truncate" else 0
        assert len(twilio.agent_audio) in (elevenlabs_audio(eleven, 3) + cut, elevenlabs_audio(eleven, 3))
        assert len(twilio.agent_audio) % 160 == 0
        sockets_closed(eleven)


class InputTimeoutElevenLabs(FakeElevenLabs):
    """Closes a recognizer socket with 1008 once no audio has come for ``input_timeout_s``, as the
    real service does after 20 s."""

    input_timeout_s = 1.0

    async def _stt_session(self, ws: WebSocket, session: SttSession) -> None:
        watchdog = asyncio.create_task(self._input_timeout(ws, session), name="fake-input-timeout")
        try:
            await super()._stt_session(ws, session)
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _input_timeout(self, ws: WebSocket, session: SttSession) -> None:
        heard = -1
        while len(session.audio) != heard:
            heard = len(session.audio)
            await asyncio.sleep(self.input_timeout_s)  # the service's clock, not a test's wait
        await self._close(ws, session, 1008)


async def test_fault_32_elevenlabs_input_timeout_keepalives(tmp_path: Path) -> None:
    fake = InputTimeoutElevenLabs()
    stt = eleven_stt(fake, keepalive_s=0.1)
    async with serve_fake(fake), served_line(tmp_path, stt_factory=stt) as line:
        twilio = line.client()
        await twilio.open()  # then the phone sends no audio at all for a while
        await eventually_keepalives(line, count=15)  # 1.5 s of a silent line: past the input timeout
        recognizer = line.stts[0]
        assert isinstance(recognizer, ElevenLabsSpeechToText)
        assert [s.server_close_code for s in fake.stt_sessions] == [None]  # kept open by the keepalives
        await speak_name(fake, twilio)
        await stream_until(twilio, lambda: twilio.call_sid in line.ended)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        sockets_closed(fake)


async def eventually_keepalives(line: Line, count: int) -> None:
    def sent() -> int:
        recognizer = line.stts[0] if line.stts else None
        return recognizer.keepalives_sent if isinstance(recognizer, ElevenLabsSpeechToText) else 0

    await eventually(lambda: sent() >= count, what=lambda: f"{sent()} keepalives sent")


async def test_fault_32_elevenlabs_1008_reconnects(tmp_path: Path) -> None:
    fake = InputTimeoutElevenLabs()
    stt = eleven_stt(fake, keepalive_s=None)  # no keepalives: the service's input timeout closes the socket
    async with serve_fake(fake), served_line(tmp_path, stt_factory=stt) as line:
        twilio = line.client()
        await twilio.open()
        await fake.wait_for(lambda: any(s.server_close_code == 1008 for s in fake.stt_sessions), within_s=5)
        await fake.wait_for(lambda: len(fake.stt_sessions) >= 2 and fake.stt_sessions[1].accepted)
        await speak_name(fake, twilio)
        await stream_until(twilio, lambda: twilio.call_sid in line.ended)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        recognizer = line.stts[0]
        assert isinstance(recognizer, ElevenLabsSpeechToText) and recognizer.reconnects >= 1
        sockets_closed(fake)


async def test_fault_32_barge_in_closes_the_synthesis_stream(tmp_path: Path, eleven: FakeElevenLabs) -> None:
    eleven.tts_faults.extend([None, "endless"])  # the question's audio never ends by itself
    async with served_line(tmp_path, tts_factory=eleven_tts(eleven)) as line:
        twilio = line.client()
        await twilio.open()
        await eleven.wait_for(lambda: len(eleven.tts_requests) >= 2)
        await twilio.wait_until(lambda: len(twilio.agent_audio) > 2 * len(eleven.tts_audio))
        (await line.wait_stt()).say(NAME)  # the caller talks over it
        await eleven.wait_for(lambda: eleven.tts_requests[1].disconnected)  # its stream was closed
        await line.clean_end(
            twilio,
            outcome="completed",
            heard=ALL_PROMPTS,
            said=[NAME],
            slots={"name": NAME},
            interrupted=True,
        )
        assert twilio.clears >= 1
        sockets_closed(eleven)


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureSpeech]:
    async with serve_azure_fake() as fake:
        yield fake


def azure_tts(fake: FakeAzureSpeech) -> Callable[[], TextToSpeech]:
    def make() -> TextToSpeech:
        primary = AzureTextToSpeech(
            key=AZURE_KEY, host=fake.host, first_chunk_timeout_s=2.0, stop_timeout_s=1.0
        )
        return ResilientTextToSpeech(primary, None, deadline_s=3.0, primary_name="azure")

    return make


async def test_fault_33_azure_synthesis_canceled(tmp_path: Path, azure: FakeAzureSpeech) -> None:
    azure.tts_faults.append("close_1011")  # the service cancels the greeting's synthesis mid-stream
    async with served_line(tmp_path, tts_factory=azure_tts(azure)) as line:
        twilio = line.client()
        await twilio.open()
        await line.wait_stt()
        await twilio.wait_until(
            lambda: any(m.startswith("ask_name") for m in twilio.played_marks), timeout_s=10
        )
        line.stt().say(NAME, partials=False)
        await line.clean_end(
            twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], slots={"name": NAME}
        )
        tts = line.ttss[0]
        assert isinstance(tts, ResilientTextToSpeech)
        assert [kind for kind, _ in tts.events][:1] == ["retry"]
        assert "ServiceError" in tts.events[0][1] or "cancel" in tts.events[0][1].lower()
        assert not azure.tts_requests[0].finished  # canceled mid-stream
        assert sum(r.finished for r in azure.tts_requests) == len(ALL_PROMPTS)  # then each prompt whole


async def test_fault_34_provider_accepts_tcp_and_never_answers(tmp_path: Path) -> None:
    release = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request, answer nothing; end only when the client closes its socket (EOF), so a
        provider client that left its socket open leaves this task behind for the clean-end check."""
        held.append(writer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    silent = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def tts() -> TextToSpeech:
        primary = ElevenLabsTextToSpeech(
            api_key=API_KEY, base_url=silent, timeout_s=0.6, first_byte_timeout_s=0.3
        )
        return ResilientTextToSpeech(
            primary, ScriptedTextToSpeech, deadline_s=0.4, retries=0, fallback_name="local"
        )

    def stt() -> SpeechToText:
        return ElevenLabsSpeechToText(
            api_key=API_KEY, base_url=silent, connect_timeout_s=0.3, max_retries=1, backoff_base_s=0.01
        )

    try:
        async with served_line(tmp_path, tts_factory=tts, stt_factory=stt) as line:
            twilio = line.client()
            await twilio.open()
            record = await line.clean_end(
                twilio,
                outcome="error",
                heard=[GREETING, QUESTION, APOLOGY],
                interrupted=True,  # the question may be cut short by the recognizer's failure
            )
            assert any("handshake" in error.message for error in record.errors)  # the recognizer's deadline
            tts_events = line.ttss[0]
            assert isinstance(tts_events, ResilientTextToSpeech)
            assert {kind for kind, _ in tts_events.events} == {"fallback"}  # each prompt: deadline, fallback
    finally:
        release.set()
        server.close()
        await server.wait_closed()
