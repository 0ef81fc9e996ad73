"""A loopback fake of the two ElevenLabs endpoints voicefsm uses, speaking their real wire protocol.

- ``POST /v1/text-to-speech/{voice_id}/stream``: checks ``xi-api-key`` and answers with a
  chunked body of mu-law bytes, or with a scripted fault (see :data:`TTS_FAULTS`).
- ``WS /v1/speech-to-text/realtime``: checks ``xi-api-key`` and the query, sends
  ``session_started``, counts the audio it receives and, once enough has arrived, "hears"
  the next utterance queued with :meth:`FakeElevenLabs.say`: a ``partial_transcript`` per
  word, then a ``committed_transcript``. Faults are scripted per connection (see :data:`STT_FAULTS`).

Point the real SDK at it with ``base_url=fake.base_url``. Every handler that hangs waits on
:attr:`FakeElevenLabs.release`, which :func:`serve_fake` sets before stopping the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse

API_KEY = "test-key"
FRAME = 160

#: TTS faults, one consumed per request: HTTP errors with ElevenLabs' real bodies, a server
#: that never answers, a body cut off halfway, an empty body, and a stream that never ends.
TTS_FAULTS = (
    "invalid_api_key",
    "quota_exceeded",
    "too_many_concurrent_requests",
    "system_busy",
    "server_error",
    "hang",
    "truncate",
    "empty",
    "endless",
)
#: STT faults, one consumed per connection:
#: - an error message type (``auth_error``, ``quota_exceeded``, ``rate_limited``, ``transcriber_error``,
#:   ``session_time_limit_exceeded`` ...): sent right after ``session_started``, then close 1008;
#:   ``session_time_limit_exceeded`` waits for audio first and closes with 1000, as a session that ran out.
#: - ``hang_handshake``: never accept the upgrade.
#: - ``close_1011``: close with 1011 as soon as audio arrives.
#: - ``close_1011_mid_utterance``: send the first partial of the next utterance, then close 1011.
#: - ``commit_then_1011``: recognise one utterance fully, then close 1011.
STT_FAULTS = ("hang_handshake", "close_1011", "close_1011_mid_utterance", "commit_then_1011")


def default_tts_audio(frames: int = 20) -> bytes:
    """Recognisable mu-law bytes (a ramp, not silence) so a test can compare what came out."""
    return bytes(i % 256 for i in range(frames * FRAME))


@dataclass
class TtsRequest:
    """One text-to-speech request as the fake saw it."""

    voice_id: str
    query: dict[str, str]
    body: dict[str, Any]
    api_key: str | None
    fault: str | None
    finished: bool = False  # the whole body was sent
    disconnected: bool = False  # the body was cut short (client went away, or a scripted fault)


@dataclass
class SttSession:
    """One realtime socket as the fake saw it."""

    query: list[tuple[str, str]]
    api_key: str | None
    fault: str | None
    accepted: bool = False
    audio: bytearray = field(default_factory=bytearray)
    commits: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    client_close_code: int | None = None  # the code the client closed with
    server_close_code: int | None = None  # the code the fake closed with
    ended: bool = False

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        return next((value for key, value in self.query if key == name), None)

    def params(self, name: str) -> list[str]:
        """Every value of query parameter ``name`` (``keyterms`` repeats)."""
        return [value for key, value in self.query if key == name]


class FakeElevenLabs:
    """State and script of the fake; :attr:`app` is the ASGI app serving it."""

    def __init__(self, *, api_key: str = API_KEY, utterance_audio_bytes: int = 5 * FRAME) -> None:
        self.api_key = api_key
        self.base_url = ""  # set by serve_fake once the socket is bound
        self.tts_audio = default_tts_audio()
        #: Seconds before the first audio byte of each synthesis (the real service takes ~0.4 s).
        self.tts_first_byte_delay_s = 0.0
        self.tts_faults: list[str | None] = []
        self.tts_requests: list[TtsRequest] = []
        self.stt_faults: list[str | None] = []
        self.stt_default_fault: str | None = None
        self.stt_sessions: list[SttSession] = []
        self.utterance_audio_bytes = utterance_audio_bytes
        self.utterances: collections.deque[str] = collections.deque()
        self.release = asyncio.Event()
        self._changed = asyncio.Event()
        self.app = self._build_app()

    def tts_texts(self) -> list[str]:
        """The text of every synthesis request so far, in order."""
        return [str(request.body.get("text")) for request in self.tts_requests]

    def say(self, *texts: str) -> None:
        """Queue utterances; each is heard once ``utterance_audio_bytes`` more audio has arrived."""
        self.utterances.extend(texts)

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 3.0) -> None:
        """Wait until ``predicate()`` holds; it is checked whenever the fake's state changes."""
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()

    def _next_fault(self, faults: list[str | None], default: str | None = None) -> str | None:
        return faults.pop(0) if faults else default

    # -- the app --------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        app.post("/v1/text-to-speech/{voice_id}/stream")(self._tts)
        app.websocket("/v1/speech-to-text/realtime")(self._stt)
        return app

    async def _tts(self, voice_id: str, request: Request) -> Response:
        body = await request.json()
        fault = self._next_fault(self.tts_faults)
        record = TtsRequest(
            voice_id, dict(request.query_params), body, request.headers.get("xi-api-key"), fault
        )
        self.tts_requests.append(record)
        self._touch()
        if record.api_key != self.api_key:
            fault = "invalid_api_key"
        errors = {
            "invalid_api_key": (401, "Invalid API key"),
            "quota_exceeded": (401, "This request exceeds your quota of 10000."),
            "too_many_concurrent_requests": (429, "Too many concurrent requests for your plan."),
            "system_busy": (429, "We are experiencing heavy traffic, please try again."),
        }
        if fault in errors:
            status, message = errors[fault]
            return JSONResponse({"detail": {"status": fault, "message": message}}, status_code=status)
        if fault == "server_error":
            return JSONResponse({"detail": {"status": "internal_error", "message": "boom"}}, status_code=500)
        if fault == "hang":
            await self.release.wait()
            return Response(status_code=503)
        if not isinstance(body.get("text"), str) or request.query_params.get("output_format") != "ulaw_8000":
            detail = {"status": "invalid_request", "message": "text and output_format=ulaw_8000 are required"}
            return JSONResponse({"detail": detail}, status_code=422)
        return StreamingResponse(self._tts_body(record), media_type="audio/basic")

    async def _tts_body(self, record: TtsRequest) -> AsyncIterator[bytes]:
        audio = b"" if record.fault == "empty" else self.tts_audio
        try:
            if self.tts_first_byte_delay_s:
                await asyncio.sleep(self.tts_first_byte_delay_s)  # the service's own latency, not a test wait
            if record.fault == "endless":
                while True:
                    yield audio[: 4 * FRAME]
                    await asyncio.sleep(0.01)  # a slow server, so the client can interrupt it
            step = 3 * FRAME + 17  # deliberately not frame-aligned: the client re-chunks
            cut = len(audio) // 2 if record.fault == "truncate" else len(audio)
            for start in range(0, cut, step):
                yield audio[start : min(start + step, cut)]
                await asyncio.sleep(0)
            if record.fault == "truncate":
                # Raising mid-body makes the server drop the connection without the final chunk.
                raise ConnectionAbortedError("scripted truncation")
            record.finished = True
        finally:
            record.disconnected = not record.finished
            self._touch()

    async def _stt(self, ws: WebSocket) -> None:
        fault = self._next_fault(self.stt_faults, self.stt_default_fault)
        session = SttSession(list(ws.query_params.multi_items()), ws.headers.get("xi-api-key"), fault)
        self.stt_sessions.append(session)
        self._touch()
        try:
            if fault == "hang_handshake":
                await self.release.wait()
                return
            await ws.accept()
            session.accepted = True
            self._touch()
            await self._stt_session(ws, session)
        except WebSocketDisconnect as exc:
            session.client_close_code = exc.code
        finally:
            session.ended = True
            self._touch()

    async def _send(self, ws: WebSocket, session: SttSession, message: dict[str, Any]) -> None:
        session.sent.append(message)
        await ws.send_text(json.dumps(message))
        self._touch()

    async def _close(self, ws: WebSocket, session: SttSession, code: int) -> None:
        session.server_close_code = code
        await ws.close(code)

    async def _error(self, ws: WebSocket, session: SttSession, kind: str, text: str, code: int) -> None:
        await self._send(ws, session, {"message_type": kind, "error": text})
        await self._close(ws, session, code)

    async def _stt_session(self, ws: WebSocket, session: SttSession) -> None:
        if session.api_key != self.api_key:
            await self._error(ws, session, "auth_error", "Invalid API key", 1008)
            return
        if (
            session.param("model_id") != "scribe_v2_realtime"
            or session.param("audio_format") != "ulaw_8000"
            or session.param("commit_strategy") not in ("vad", "manual")
        ):
            await self._error(
                ws, session, "invalid_request", "unsupported model, audio format or strategy", 1008
            )
            return
        config = {
            "sample_rate": 8000,
            "audio_format": session.param("audio_format"),
            "model_id": session.param("model_id"),
            "commit_strategy": session.param("commit_strategy"),
            "language_code": session.param("language_code"),
        }
        await self._send(
            ws, session, {"message_type": "session_started", "session_id": "fake", "config": config}
        )
        fault = session.fault
        if fault is not None and fault not in STT_FAULTS and fault != "session_time_limit_exceeded":
            await self._error(ws, session, fault, f"scripted {fault}", 1008)
            return
        heard = 0  # audio bytes consumed by utterances already heard
        while True:
            message = json.loads(await ws.receive_text())
            if not self._valid_chunk(message):
                await self._error(
                    ws, session, "input_error", f"malformed audio message: {message!r}"[:200], 1008
                )
                return
            try:
                session.audio += base64.b64decode(message["audio_base_64"], validate=True)
            except binascii.Error:
                await self._error(ws, session, "input_error", "audio_base_64 is not base64", 1008)
                return
            session.commits += bool(message["commit"])
            self._touch()
            if fault == "close_1011":
                await self._close(ws, session, 1011)
                return
            if fault == "session_time_limit_exceeded":
                await self._error(ws, session, fault, "Session time limit exceeded", 1000)
                return
            while self.utterances and len(session.audio) - heard >= self.utterance_audio_bytes:
                heard += self.utterance_audio_bytes
                words = self.utterances.popleft().split()
                if fault == "close_1011_mid_utterance":
                    await self._send(ws, session, {"message_type": "partial_transcript", "text": words[0]})
                    await self._close(ws, session, 1011)
                    return
                for end in range(1, len(words)):
                    partial = {"message_type": "partial_transcript", "text": " ".join(words[:end])}
                    await self._send(ws, session, partial)
                await self._send(
                    ws, session, {"message_type": "committed_transcript", "text": " ".join(words)}
                )
                if fault == "commit_then_1011":
                    await self._close(ws, session, 1011)
                    return

    @staticmethod
    def _valid_chunk(message: Any) -> bool:
        if not isinstance(message, dict):
            return False
        # The SDK sends "previous_text": null on every chunk, so null must be accepted.
        return (
            message.get("message_type") == "input_audio_chunk"
            and isinstance(message.get("audio_base_64"), str)
            and isinstance(message.get("commit"), bool)
            and message.get("sample_rate") == 8000
            and isinstance(message.get("previous_text"), str | None)
        )


@contextlib.asynccontextmanager
async def serve_fake(fake: FakeElevenLabs) -> AsyncIterator[FakeElevenLabs]:
    """Run ``fake`` under uvicorn on 127.0.0.1 (an ephemeral port) in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        fake.app,
        lifespan="off",
        log_config=None,
        log_level="critical",
        access_log=False,
        http="h11",
        ws="websockets-sansio",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    # Listening before uvicorn starts: early clients wait in the backlog, so nobody polls for "started".
    sock.listen()
    task = asyncio.create_task(server.serve(sockets=[sock]), name="elevenlabs-fake-server")
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        await task
        sock.close()
