"""ElevenLabs realtime speech-to-text (Scribe): one WebSocket per call, fed the caller's mu-law frames as-is.

Two tasks per recognizer: the *feeder* moves frames from the call's queue into a bounded
buffer (it never stops while the recognizer runs), and the *session* task connects, sends the
buffer, and reconnects when the socket fails. Frames that arrive while a socket is being
replaced stay in the buffer and go to the next one. So does the audio sent since the last
committed transcript: the server loses what it had not committed when its socket dies, and
frames written into a socket the server already closed are lost too. A reconnect therefore
loses no audio beyond the buffer's bound.

Failures come in two kinds. Transient ones (a socket closed by the server, a connection
error or timeout, ``transcriber_error``, ``queue_overflow``, ``resource_exhausted``,
``session_time_limit_exceeded``) reconnect with exponential backoff and jitter, at most
``max_retries`` times in a row; a session that heard something, or stayed up for
``stable_session_s``, resets that budget. Terminal ones (bad key, quota, rate limit, rejected
settings or audio) end recognition at once. Either way ``on_error`` hears about the end once.

When the caller's audio stops coming (a line on hold, a far end that stalled) for ``keepalive_s``,
a frame of silence is sent, so the service does not close the idle socket (its input timeout).

Echo discard, the one-start rule and the idempotent stop come from
:class:`~voicefsm.providers.streaming.StreamingRecognizer`.

Keyterms come from :meth:`set_hints`; Scribe takes them when a socket opens, so new hints
apply from the next connection on (the socket is not replaced just to change them).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException

from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.base import RecognitionHints
from voicefsm.providers.streaming import StreamingRecognizer

if TYPE_CHECKING:
    from elevenlabs.client import AsyncElevenLabs
    from elevenlabs.realtime import RealtimeAudioOptions, RealtimeConnection

    from voicefsm.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "elevenlabs-stt"
INSTALL_HINT = "pip install 'voicefsm[elevenlabs]'"
DEFAULT_MODEL_ID = "scribe_v2_realtime"
SAMPLE_RATE = 8000
#: One 20 ms frame of mu-law silence, base64: what a quiet line sends to keep the socket open.
KEEPALIVE_AUDIO = base64.b64encode(b"\xff" * 160).decode("ascii")
MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 20

#: Server messages after which trying again cannot help: reported at once, never retried.
TERMINAL_ERRORS: dict[str, str] = {
    "auth_error": "the realtime service rejected the API key; check ELEVENLABS_API_KEY",
    "quota_exceeded": "the account's quota is used up; top up or upgrade the plan",
    "rate_limited": "too many requests or sessions for this plan; lower concurrency or upgrade",
    "unaccepted_terms": "the account has not accepted the speech-to-text terms; accept them in the dashboard",
    "input_error": "the service rejected the audio it was sent",
    "invalid_request": (
        "the service rejected the session settings; check STT_MODEL_ID, STT_LANGUAGE_CODE and STT_VAD_*"
    ),
    "chunk_size_exceeded": "an audio message was too large for the service; lower batch_frames",
}
#: Server messages after which a fresh socket should work.
TRANSIENT_ERRORS = frozenset(
    {"error", "transcriber_error", "queue_overflow", "resource_exhausted", "session_time_limit_exceeded"}
)


@dataclass(eq=False)
class _Session:
    """What one socket went through; SDK handlers write here, the session task reads it afterwards."""

    opened_at: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    failure_kind: str | None = None
    failure_text: str = ""
    close_code: int | None = None
    close_reason: str | None = None
    productive: bool = False

    def fail(self, kind: str, text: str) -> None:
        if self.failure_kind is None:
            self.failure_kind, self.failure_text = kind, text
        self.done.set()


@dataclass(frozen=True, slots=True)
class _Outcome:
    reason: str
    terminal: bool


class ElevenLabsSpeechToText(StreamingRecognizer):
    """A SpeechToText on ElevenLabs' realtime Scribe socket, with VAD commits, reconnects and echo discard."""

    name = "elevenlabs"
    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model_id: str = DEFAULT_MODEL_ID,
        language_code: str | None = None,
        vad_silence_threshold_s: float = 0.8,
        vad_threshold: float = 0.4,
        keyterms: Sequence[str] = (),
        echo_window_s: float = 0.4,
        discard_partials_while_speaking: bool = False,
        connect_timeout_s: float = 5.0,
        close_timeout_s: float = 1.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 4.0,
        stable_session_s: float = 5.0,
        keepalive_s: float | None = 5.0,
        buffer_frames: int = 250,
        batch_frames: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ProviderUnavailable(PROVIDER, "no API key: set ELEVENLABS_API_KEY or pass api_key=")
        client_class, realtime = _import_sdk()
        super().__init__(
            echo_window_s=echo_window_s,
            discard_partials_while_speaking=discard_partials_while_speaking,
            clock=clock,
        )
        self.base_url = base_url
        self.model_id = model_id
        self.language_code = language_code
        self.vad_silence_threshold_s = vad_silence_threshold_s
        self.vad_threshold = vad_threshold
        self.keyterms = tuple(keyterms)
        self.connect_timeout_s = connect_timeout_s
        self.close_timeout_s = close_timeout_s
        # The SDK's close() swallows one CancelledError; stop() cancels again rather than wait forever.
        self.recancel_after_s = max(close_timeout_s, 0.5) * 2
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.stable_session_s = stable_session_s
        #: Send a frame of silence after this long without caller audio (the service's input timeout is 20 s).
        self.keepalive_s = keepalive_s
        self.keepalives_sent = 0
        self.buffer_frames = buffer_frames
        self.batch_frames = max(1, batch_frames)
        self._realtime_sdk = realtime
        # Our own (unused for STT) httpx client so stop() can close everything the SDK client holds.
        self._http: httpx.AsyncClient = httpx.AsyncClient()
        # api_key is always explicit: the SDK's default reads ELEVENLABS_API_KEY at import time.
        self._client: AsyncElevenLabs = client_class(
            api_key=api_key, base_url=base_url, httpx_client=self._http
        )
        self._random = random.Random()

        self.sessions_opened = 0
        self.reconnects = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        #: Messages the service sent that were not understood (not JSON, or not an object) and ignored.
        self.messages_ignored = 0

        self._hints = RecognitionHints()
        self._pending: collections.deque[bytes] = collections.deque()
        self._uncommitted: collections.deque[bytes] = collections.deque()  # sent since the last commit
        self._frames_ready = asyncio.Event()
        self._audio_ended = False
        self._sessions: asyncio.Task[None] | None = None
        self._conn: RealtimeConnection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ElevenLabsSpeechToText:
        """Build from ``ELEVENLABS_*`` and ``STT_*`` settings; ProviderUnavailable without key or SDK."""
        key = settings.elevenlabs_api_key
        if key is None or not key.get_secret_value():
            raise ProviderUnavailable(PROVIDER, "no API key: set ELEVENLABS_API_KEY")
        return cls(
            api_key=key.get_secret_value(),
            base_url=settings.elevenlabs_base_url,
            model_id=settings.stt_model_id,
            language_code=settings.stt_language_code,
            vad_silence_threshold_s=settings.stt_vad_silence_threshold_s,
            vad_threshold=settings.stt_vad_threshold,
            connect_timeout_s=min(5.0, settings.elevenlabs_timeout_s),
        )

    # -- the SpeechToText protocol --------------------------------------------------------

    def set_hints(self, hints: RecognitionHints) -> None:
        """Remember the phrases to send as keyterms when the next socket opens."""
        self._hints = hints

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        """Start the feeder and the session task; connection failures are reported through ``on_error``."""
        self._begin()
        self._spawn(self._feed(audio), name="elevenlabs-stt-feeder")
        self._sessions = self._spawn(self._run_sessions(), name="elevenlabs-stt-session")

    async def _release(self) -> None:
        """After the tasks: close the socket still open, if any, and the HTTP client."""
        if self._conn is not None:
            await self._close_connection(self._conn)
        await self._http.aclose()

    # -- properties for tests and metrics --------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the session task is alive (connected, connecting or backing off)."""
        return self._sessions is not None and not self._sessions.done()

    def connect_options(self) -> RealtimeAudioOptions:
        """The options handed to ``speech_to_text.realtime.connect`` for the next socket."""
        rt = self._realtime_sdk
        options: RealtimeAudioOptions = {
            "model_id": self.model_id,
            "audio_format": rt.AudioFormat.ULAW_8000,
            "sample_rate": SAMPLE_RATE,
            "commit_strategy": rt.CommitStrategy.VAD,
            "vad_silence_threshold_secs": self.vad_silence_threshold_s,
            "vad_threshold": self.vad_threshold,
            "include_timestamps": False,
        }
        if self.language_code:
            options["language_code"] = self.language_code
        terms = self._keyterms()
        if terms:
            options["keyterms"] = terms
        return options

    def _keyterms(self) -> list[str]:
        seen: dict[str, None] = {}
        for term in (*self.keyterms, *(self._hints.keyterms or self._hints.phrases)):
            term = " ".join(term.split())
            # Scribe refuses longer terms; skip them rather than lose the whole session.
            if 0 < len(term) <= MAX_KEYTERM_CHARS:
                seen[term] = None
        return list(seen)[:MAX_KEYTERMS]

    # -- audio in ---------------------------------------------------------------------------

    async def _feed(self, audio: asyncio.Queue[bytes | None]) -> None:
        while (frame := await audio.get()) is not None:
            if len(self._pending) >= self.buffer_frames:
                self._pending.popleft()
                self.frames_dropped += 1
            self._pending.append(frame)
            self._frames_ready.set()
        self._audio_ended = True
        self._frames_ready.set()

    async def _send_audio(self, conn: RealtimeConnection, session: _Session) -> None:
        committed_end = False
        try:
            while True:
                if not self._pending:
                    if self._audio_ended and not committed_end:
                        await conn.commit()  # flush the last utterance: no more audio will come
                        committed_end = True
                    self._frames_ready.clear()
                    if self.keepalive_s is None or self._audio_ended:
                        await self._frames_ready.wait()
                    elif not await _set_within(self._frames_ready, self.keepalive_s):
                        # No caller audio for a while (a line on hold, a stalled far end): the
                        # service closes an idle socket (1008, input timeout), so send silence.
                        await conn.send({"audio_base_64": KEEPALIVE_AUDIO})
                        self.keepalives_sent += 1
                    continue
                batch = [self._pending.popleft() for _ in range(min(self.batch_frames, len(self._pending)))]
                try:
                    await conn.send({"audio_base_64": base64.b64encode(b"".join(batch)).decode("ascii")})
                except BaseException:
                    self._pending.extendleft(reversed(batch))  # the next socket gets them
                    raise
                self.frames_sent += len(batch)
                self._uncommitted.extend(batch)
                while len(self._uncommitted) > self.buffer_frames:
                    self._uncommitted.popleft()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            session.fail("send_failed", f"sending audio failed: {type(exc).__name__}: {exc}")

    # -- sessions ---------------------------------------------------------------------------

    async def _run_sessions(self) -> None:
        try:
            await self._reconnect_loop()
        except Exception as exc:  # a bug here must still end the call's wait, not leave it listening
            log.exception("ElevenLabs STT session task failed")
            self._give_up(f"internal error in the recognizer: {type(exc).__name__}: {exc}")
        finally:
            self.finished.set()

    async def _reconnect_loop(self) -> None:
        failures = 0
        while not self._stopping:
            session = _Session(opened_at=self._clock())
            outcome = await self._one_session(session)
            if self._stopping:
                return
            if outcome.terminal:
                self._give_up(outcome.reason)
                return
            if self._audio_ended:
                return  # the call's audio is over (and was committed): nothing left to recognise
            if session.productive or self._clock() - session.opened_at >= self.stable_session_s:
                failures = 0
            failures += 1
            if failures > self.max_retries:
                tries = "once" if failures == 1 else f"{failures} times in a row"
                self._give_up(f"the realtime socket failed {tries}; gave up (last: {outcome.reason})")
                return
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
            delay *= self._random.uniform(0.5, 1.0)
            log.info("ElevenLabs STT reconnecting in %.2f s: %s", delay, outcome.reason)
            await asyncio.sleep(delay)
            self.reconnects += 1

    async def _one_session(self, session: _Session) -> _Outcome:
        try:
            conn = await self._connect(session)
        except _ConnectFailed as exc:
            return exc.outcome
        self.sessions_opened += 1
        self._conn = conn
        sender = asyncio.create_task(self._send_audio(conn, session), name="elevenlabs-stt-sender")
        try:
            await session.done.wait()
        finally:
            sender.cancel()
            await asyncio.wait({sender})
            await self._close_connection(conn)
            self._conn = None
            self._replay_uncommitted()
        return self._classify(session)

    def _replay_uncommitted(self) -> None:
        """Put the audio the dead socket never committed back in front of the buffer, within its bound."""
        replay, room = list(self._uncommitted), max(0, self.buffer_frames - len(self._pending))
        self._uncommitted.clear()
        if len(replay) > room:
            self.frames_dropped += len(replay) - room
            replay = replay[len(replay) - room :]
        self._pending.extendleft(reversed(replay))
        if replay:
            self._frames_ready.set()

    async def _connect(self, session: _Session) -> RealtimeConnection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                conn = await self._client.speech_to_text.realtime.connect(self.connect_options())
        except TimeoutError:
            raise _ConnectFailed(
                f"the realtime service did not complete the handshake within {self.connect_timeout_s:g} s",
                terminal=False,
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise _ConnectFailed(
                    f"HTTP {status}: {TERMINAL_ERRORS['auth_error']}", terminal=True
                ) from None
            if status == 429:
                raise _ConnectFailed(f"HTTP 429: {TERMINAL_ERRORS['rate_limited']}", terminal=True) from None
            raise _ConnectFailed(
                f"the handshake was refused with HTTP {status}", terminal=status < 500
            ) from None
        except (InvalidURI, ValueError) as exc:
            raise _ConnectFailed(f"the realtime URL or settings are invalid: {exc}", terminal=True) from None
        except (OSError, InvalidHandshake, WebSocketException) as exc:
            where = self.base_url or "api.elevenlabs.io"
            raise _ConnectFailed(
                f"could not connect to {where}: {type(exc).__name__}: {exc}", terminal=False
            ) from None
        rt = self._realtime_sdk
        # No await since connect() returned, so the SDK's reader has not run yet: nothing is missed.
        conn.on(rt.RealtimeEvents.PARTIAL_TRANSCRIPT, lambda data: self._on_partial(session, data))
        conn.on(rt.RealtimeEvents.COMMITTED_TRANSCRIPT, lambda data: self._on_committed(session, data))
        conn.on(rt.RealtimeEvents.ERROR, lambda data: self._on_error_message(session, data))
        conn.on(rt.RealtimeEvents.CLOSE, lambda info: self._on_close(session, info))
        return conn

    async def _close_connection(self, conn: RealtimeConnection) -> None:
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await conn.close()
        except Exception as exc:  # a close that fails or times out is finished by abort() below
            log.debug("ElevenLabs STT socket did not close cleanly: %s: %s", type(exc).__name__, exc)
        finally:
            transport = getattr(conn.websocket, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.abort()
            # The SDK's reader task is private; make sure it has ended before we return.
            reader: asyncio.Task[None] | None = getattr(conn, "_message_task", None)
            if reader is not None and not reader.done():
                reader.cancel()
                await asyncio.wait({reader})

    def _classify(self, session: _Session) -> _Outcome:
        kind, text = session.failure_kind, session.failure_text
        said = f" (server said: {text})" if text else ""
        if kind in TERMINAL_ERRORS:
            return _Outcome(f"{kind}: {TERMINAL_ERRORS[kind]}{said}", terminal=True)
        if kind == "send_failed":
            return _Outcome(text, terminal=False)
        if kind is not None:
            return _Outcome(f"{kind}{said}", terminal=False)
        reason = f" {session.close_reason}" if session.close_reason else ""
        return _Outcome(f"the server closed the socket (code {session.close_code}{reason})", terminal=False)

    def _give_up(self, reason: str) -> None:
        self._fail(ProviderError(PROVIDER, reason, retryable=False))

    # -- SDK handlers: called synchronously on the loop by the SDK's reader, so they stay tiny --

    def _on_partial(self, session: _Session, data: Any) -> None:
        text = _transcript(data)
        if text is None or self._ignoring():
            return
        session.productive = True
        self._heard_partial(text)

    def _on_committed(self, session: _Session, data: Any) -> None:
        text = _transcript(data)
        if text is None or self._ignoring():
            return
        session.productive = True
        self._uncommitted.clear()  # the server has settled that audio: never replay it
        self._heard_final(text)

    def _on_error_message(self, session: _Session, data: Any) -> None:
        if not isinstance(data, dict):
            return
        kind = data.get("message_type")
        text = str(data.get("error") or "")[:200]
        if kind is None:
            # The SDK's own report: a socket error (a close event follows) or an unparsable message.
            if text.startswith("Failed to parse message"):
                self.messages_ignored += 1
            log.debug("ElevenLabs STT: %s", text)
        elif kind in TERMINAL_ERRORS or kind in TRANSIENT_ERRORS:
            session.fail(str(kind), text)
        else:  # commit_throttled, insufficient_audio_activity: worth a line, not a reconnect
            log.warning("ElevenLabs STT reported %s: %s", kind, text)

    def _on_close(self, session: _Session, info: Any) -> None:
        if isinstance(info, dict):
            session.close_code = info.get("code")
            session.close_reason = info.get("reason") or None
        session.done.set()


async def _set_within(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; whether it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _transcript(data: Any) -> str | None:
    """The text of a transcript message, or None when it has none worth reporting."""
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) and text.strip() else None


class _ConnectFailed(Exception):
    def __init__(self, reason: str, *, terminal: bool) -> None:
        super().__init__(reason)
        self.outcome = _Outcome(reason, terminal)


def _import_sdk() -> tuple[type[AsyncElevenLabs], Any]:
    try:
        from elevenlabs import realtime
        from elevenlabs.client import AsyncElevenLabs
    except ImportError as exc:
        raise ProviderUnavailable(PROVIDER, f"the ElevenLabs SDK is not installed: {INSTALL_HINT}") from exc
    return AsyncElevenLabs, realtime
