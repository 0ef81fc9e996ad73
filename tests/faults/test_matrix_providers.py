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
from websockets.exceptions import ConnectionClosed
from harness import APOLOGY, FRAME, GIVE_UP, GOODBYE, GREETING, QUESTION, Line, QuickFaultLine, served_line

from voicefsm.providers.azure_tts import AzureTextToSpeech
from voicefsm.providers.base import SpeechToText, TextToSpeech
from voicefsm.providers.elevenlabs_stt import ElevenLabsSpeechToText
from voicefsm.providers.elevenlabs_tts import ElevenLabsTextToSpeech
from voicefsm.providers.fallback import ResilientTextToSpeech
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
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
    fake: FakeElevenLabs, *, fallback: bool = True, deadline_s: float = 1.0
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


async def stream_until(twilio: TwilioStreamClient, done: Callable[[], bool], timeout_s: float = 5.0) -> None:
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
        assert [kind for kind, _ in tts.events] == ["retry", "fallback"]
        assert all("no audio within" in reason or "first" in reason for _, reason in tts.events)


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
