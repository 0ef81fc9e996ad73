"""A loopback fake of Azure Speech's WebSocket protocol ("USP"), for the real SDK to talk to.

Point the SDK at it with ``SpeechConfig(host=fake.host, subscription=API_KEY)``.

- STT, ``/speech/recognition/conversation/cognitiveservices/v1``: records ``speech.config``,
  ``speech.context`` and the audio; on the first audio frame it sends ``turn.start``, and once
  ``bytes_per_utterance`` more audio bytes have arrived it "hears" the next utterance queued with
  :meth:`FakeAzureSpeech.say` (``speech.startDetected``, a ``speech.hypothesis`` per partial,
  ``speech.endDetected``, ``speech.phrase``) or :meth:`FakeAzureSpeech.no_match`. The empty audio
  frame that ends the stream is answered with ``turn.end``.
- TTS, ``/cognitiveservices/websocket/v1``: records ``synthesis.context`` and the SSML, then sends
  ``turn.start``, ``tts_audio`` as binary ``Path:audio`` frames of ``tts_chunk_bytes`` and ``turn.end``.

Faults are consumed one per connection from ``stt_faults`` / ``tts_faults`` (see :data:`FAULTS`).
Every handler that hangs waits on :attr:`FakeAzureSpeech.release`, set before the server stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

API_KEY = "test-azure-key"
STT_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
TTS_PATH = "/cognitiveservices/websocket/v1"
TICKS_PER_BYTE = 1250  # 100 ns ticks per byte of 8 kHz 8-bit audio

#: ``reject_NNN``: refuse the upgrade with HTTP NNN. ``silent``: accept TCP, never answer the upgrade.
#: ``mute``: accept the upgrade, read everything, send nothing. ``close_1011``: close with 1011
#: mid-turn (STT: after the first hypothesis of the next utterance; TTS: after the first audio chunk).
#: ``truncate`` (TTS): send half the audio, then drop the TCP connection without a close frame.
FAULTS = (
    "reject_401",
    "reject_403",
    "reject_429",
    "reject_500",
    "reject_503",
    "silent",
    "mute",
    "close_1011",
    "truncate",
)


def default_tts_audio(frames: int = 25) -> bytes:
    """Recognisable mu-law bytes (a ramp, not silence) so a test can compare what came out."""
    return bytes(i % 256 for i in range(frames * 160))


@dataclass(frozen=True)
class Utterance:
    """What the fake will "hear" next: partial hypotheses, then a final (or a NoMatch)."""

    text: str
    partials: tuple[str, ...] = ()
    status: str = "Success"


@dataclass
class SttSession:
    """One recognition socket as the fake saw it."""

    query: str
    headers: dict[str, str]
    fault: str | None
    configs: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)
    riff_header: bytes = b""
    audio_bytes: int = 0
    end_of_stream: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # the socket is gone


@dataclass
class TtsRequest:
    """One synthesis request as the fake saw it."""

    ssml: str
    context: dict[str, Any]
    fault: str | None
    sent_bytes: int = 0
    finished: bool = False


def parse_text(message: str) -> tuple[dict[str, str], str]:
    """Split a USP text message into its headers (lower-case names) and body."""
    head, _, body = message.partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, body


def parse_binary(message: bytes) -> tuple[dict[str, str], bytes]:
    """Split a USP binary message (2-byte big-endian header length, headers, payload)."""
    size = int.from_bytes(message[:2], "big")
    headers, _ = parse_text(message[2 : 2 + size].decode("ascii") + "\r\n\r\n")
    return headers, message[2 + size :]


def _tag() -> str:
    return uuid.uuid4().hex


def text_message(path: str, request_id: str, body: dict[str, Any]) -> str:
    """A USP text message as the service sends it."""
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
        f"Path:{path}\r\n\r\n{json.dumps(body)}"
    )


def audio_message(request_id: str, payload: bytes) -> bytes:
    """A USP binary ``Path:audio`` message as the TTS service sends it."""
    head = f"X-RequestId:{request_id}\r\nX-StreamId:1\r\nPath:audio\r\n".encode("ascii")
    return len(head).to_bytes(2, "big") + head + payload


class FakeAzureSpeech:
    """The scripted service: queue utterances and faults, then read what the SDK sent."""

    def __init__(self) -> None:
        self.host = ""  # ws://127.0.0.1:PORT once serving
        self.stt_faults: collections.deque[str] = collections.deque()
        self.tts_faults: collections.deque[str] = collections.deque()
        self.utterances: collections.deque[Utterance] = collections.deque()
        self.bytes_per_utterance = 1600  # audio (200 ms) heard before each queued utterance
        self.tts_audio = default_tts_audio()
        self.tts_chunk_bytes = 800
        self.tts_chunk_delay_s = 0.0
        self.stt_sessions: list[SttSession] = []
        self.tts_requests: list[TtsRequest] = []
        self.connections: list[str] = []  # the path of every upgrade request, refused ones too
        self.release = asyncio.Event()
        self.heard = asyncio.Condition()  # notified after each utterance or NoMatch is sent
        self._changed = asyncio.Event()  # set whenever a session receives audio or a TTS request arrives

    def say(self, text: str, *partials: str) -> None:
        """Queue an utterance; without ``partials`` every word prefix becomes a hypothesis."""
        if not partials:
            words = text.rstrip(".?!").split()
            partials = tuple(" ".join(words[:end]).lower() for end in range(1, len(words) + 1))
        self.utterances.append(Utterance(text, partials))

    def no_match(self) -> None:
        """Queue a NoMatch result (``InitialSilenceTimeout``)."""
        self.utterances.append(Utterance("", (), "InitialSilenceTimeout"))

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is checked whenever audio or a TTS request arrives."""
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- handshake -------------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        self.connections.append(path)
        faults = self.stt_faults if path == STT_PATH else self.tts_faults if path == TTS_PATH else None
        if faults is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such path\n")
        if request.headers.get("Ocp-Apim-Subscription-Key") != API_KEY:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad key\n")
        fault = faults[0] if faults else None
        if fault is not None and fault.startswith("reject_"):
            faults.popleft()
            return connection.respond(HTTPStatus(int(fault.removeprefix("reject_"))), f"{fault}\n")
        if fault == "silent":
            faults.popleft()
            await self.release.wait()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        path, _, query = ws.request.path.partition("?") if ws.request else ("", "", "")
        with contextlib.suppress(ConnectionClosed):
            if path == STT_PATH:
                await self._stt(ws, query)
            else:
                await self._tts(ws)

    # -- speech to text --------------------------------------------------------------------

    async def _stt(self, ws: ServerConnection, query: str) -> None:
        assert ws.request is not None
        session = SttSession(
            query,
            {k.lower(): v for k, v in ws.request.headers.raw_items()},
            self.stt_faults.popleft() if self.stt_faults else None,
        )
        self.stt_sessions.append(session)
        turn: str | None = None
        heard_at = turn_at = 0  # audio bytes received when the last utterance / the turn began
        try:
            async for message in ws:
                if isinstance(message, str):
                    headers, body = parse_text(message)
                    target = {"speech.config": session.configs, "speech.context": session.contexts}
                    if headers.get("path") in target:
                        target[headers["path"]].append(json.loads(body))
                    continue
                headers, payload = parse_binary(message)
                if headers.get("path") != "audio" or session.fault == "mute":
                    continue
                request_id = headers.get("x-requestid", "")
                if turn != request_id:
                    turn, turn_at = request_id, session.audio_bytes
                    await ws.send(text_message("turn.start", turn, {"context": {"serviceTag": _tag()}}))
                if not payload:  # an empty audio message ends the stream: acknowledge all of it
                    session.end_of_stream = True
                    await ws.send(
                        text_message(
                            "speech.phrase",
                            turn,
                            {
                                "RecognitionStatus": "EndOfDictation",
                                "Offset": (session.audio_bytes - turn_at) * TICKS_PER_BYTE,
                                "Duration": 0,
                            },
                        )
                    )
                    await ws.send(text_message("turn.end", turn, {}))
                    continue
                if payload.startswith(b"RIFF"):
                    session.riff_header, payload = payload[:44], payload[44:]
                session.audio_bytes += len(payload)
                self._changed.set()
                if session.audio_bytes - heard_at < self.bytes_per_utterance:
                    continue
                heard_at = session.audio_bytes
                if self.utterances:
                    await self._recognise(
                        ws, session, turn, session.audio_bytes - turn_at, self.utterances.popleft()
                    )
                if session.fault == "close_1011":
                    await ws.close(1011, "Internal server error")
                    return
        finally:
            session.closed.set()

    async def _recognise(
        self, ws: ServerConnection, session: SttSession, turn: str, turn_bytes: int, said: Utterance
    ) -> None:
        end = turn_bytes * TICKS_PER_BYTE  # offsets count from the start of the turn
        start = max(0, end - self.bytes_per_utterance * TICKS_PER_BYTE)
        if said.status != "Success":
            await ws.send(
                text_message(
                    "speech.phrase",
                    turn,
                    {"RecognitionStatus": said.status, "Offset": start, "Duration": end - start},
                )
            )
        else:
            await ws.send(text_message("speech.startDetected", turn, {"Offset": start}))
            for partial in said.partials:
                await ws.send(
                    text_message(
                        "speech.hypothesis", turn, {"Text": partial, "Offset": start, "Duration": end - start}
                    )
                )
                if session.fault == "close_1011":
                    return  # the socket closes mid-utterance
            await ws.send(text_message("speech.endDetected", turn, {"Offset": end}))
            await ws.send(
                text_message(
                    "speech.phrase",
                    turn,
                    {
                        "RecognitionStatus": "Success",
                        "DisplayText": said.text,
                        "Offset": start,
                        "Duration": end - start,
                    },
                )
            )
        async with self.heard:
            self.heard.notify_all()

    # -- text to speech --------------------------------------------------------------------

    async def _tts(self, ws: ServerConnection) -> None:
        fault = self.tts_faults.popleft() if self.tts_faults else None
        context: dict[str, Any] = {}
        async for message in ws:
            if not isinstance(message, str):
                continue
            headers, body = parse_text(message)
            if headers.get("path") == "synthesis.context":
                context = json.loads(body)
            if headers.get("path") != "ssml":
                continue
            request = TtsRequest(body, context, fault)
            self.tts_requests.append(request)
            self._changed.set()
            if fault == "mute":
                continue
            await self._synthesise(ws, request, headers.get("x-requestid", ""))
            fault = self.tts_faults.popleft() if self.tts_faults else None

    async def _synthesise(self, ws: ServerConnection, request: TtsRequest, request_id: str) -> None:
        await ws.send(text_message("turn.start", request_id, {"context": {"serviceTag": _tag()}}))
        audio = self.tts_audio
        if request.fault == "truncate":
            audio = audio[: len(audio) // 2]
        for at in range(0, len(audio), self.tts_chunk_bytes):
            chunk = audio[at : at + self.tts_chunk_bytes]
            await ws.send(audio_message(request_id, chunk))
            request.sent_bytes += len(chunk)
            if request.fault == "close_1011":
                await ws.close(1011, "Internal server error")
                return
            if self.tts_chunk_delay_s:
                await asyncio.sleep(self.tts_chunk_delay_s)  # pacing, as a real service streams
        if request.fault == "truncate":
            ws.transport.abort()
            return
        await ws.send(text_message("turn.end", request_id, {}))
        request.finished = True


@contextlib.asynccontextmanager
async def serve_azure_fake(fake: FakeAzureSpeech | None = None) -> AsyncIterator[FakeAzureSpeech]:
    """Run a fake Azure Speech service on 127.0.0.1 (an ephemeral port) in this event loop."""
    fake = fake or FakeAzureSpeech()
    server = await serve(
        fake._handler,
        "127.0.0.1",
        0,
        process_request=fake._process_request,
        subprotocols=None,
        open_timeout=None,
        ping_interval=None,
        close_timeout=1,
    )
    port = next(iter(server.sockets)).getsockname()[1]
    fake.host = f"ws://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.close()
        await server.wait_closed()
