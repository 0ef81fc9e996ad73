"""One phone call: audio queues, marks, intents for the far end, and the call's lifecycle.

A ``Call`` is built complete once its far end has started (its id, caller, parameters,
audio tap and recognizer factory are given to the constructor and never patched) and is
gone when the call ends. It owns no socket: the driver (:func:`voicefsm.runtime.driver.run_call`)
sends what :meth:`Call.wait_outbound` says is queued (:meth:`Call.take_outbound`) and feeds
:meth:`Call.put_inbound`, :meth:`Call.mark_echoed` and :meth:`Call.emit`. Application code (the
flow runtime, or a plain coroutine) speaks with :meth:`speak`, waits for playback with
:meth:`play_mark`, and asks for a hang-up or a buffer clear with :meth:`request_disconnect` and
:meth:`request_clear_buffer`.

Everything here runs on one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from voicefsm.core.audio import SAMPLE_RATE_HZ, Framer
from voicefsm.core.events import (
    CallEvent,
    Committed,
    Disconnected,
    MarkReceived,
    Recognizing,
    SttError,
)
from voicefsm.core.intents import ClearBuffer, OutboundItem, PlaceMark, PlayAudio
from voicefsm.core.marks import MarkLedger, MarkOutcome
from voicefsm.errors import ProviderError
from voicefsm.observability.tracing import NO_SPAN, Span, mark_error, start_span
from voicefsm.providers.base import SpeechToText, TextToSpeech

log = logging.getLogger(__name__)

CallListener = Callable[[CallEvent], None]
SttFactory = Callable[[], SpeechToText]

#: 10 s of caller audio: a recognizer further behind than this has stalled, so old frames go.
INBOUND_MAX_FRAMES = 500
#: Spoken audio goes to the far end in pieces of up to one second, not frame by frame: Twilio queues
#: what it is sent and plays it in order (its own example sends a second a message), and every
#: message costs the server a JSON text, a WebSocket frame and a system call.
SPEAK_PIECE_BYTES = SAMPLE_RATE_HZ  # one mu-law byte a sample
#: While the caller has at least this much of a prompt queued at a far end that plays in real time,
#: the synthesizer's next chunks are gathered into one piece instead of sent one message each: the
#: caller hears no difference, and a 200 ms chunk a message costs as much as a second a message.
GATHER_AHEAD_S = 0.3
#: Gathered audio goes at the latest when the caller's queued audio is down to this much (a timer;
#: a synthesizer that stalls mid-prompt must not leave the caller a gap that gathering made).
GATHER_FLUSH_S = 0.15


class AudioTap(Protocol):
    """Where a call copies both legs' audio (a recorder or live monitor)."""

    def tap_caller(self, frame: bytes) -> None: ...
    def tap_agent(self, audio: bytes) -> None:
        """Agent audio as it is queued for the caller: one frame, or a piece of a prompt (whole frames)."""
        ...

    def clear_agent(self) -> None:
        """Forget agent audio not yet mixed: a barge-in cleared it, so the caller never heard it."""
        ...


@dataclass(frozen=True, slots=True)
class SpeakResult:
    """How one :meth:`Call.speak` ended: exactly one of played, interrupted, disconnected or error."""

    text: str
    last_spoken: str
    interrupted: bool = False
    call_disconnected: bool = False
    error: str | None = None

    @property
    def played(self) -> bool:
        """The whole prompt reached the caller and its mark came back."""
        return not (self.interrupted or self.call_disconnected or self.error)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with the call's sid, so interleaved calls stay readable."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call_sid'] if self.extra else '-'}] {msg}", kwargs


class Call:
    """Queues, marks, intents and lifecycle of one phone call. Not thread-safe: use it on its loop."""

    def __init__(
        self,
        *,
        call_sid: str,
        caller: str | None = None,
        parameters: Mapping[str, str] | None = None,
        tap: AudioTap | None = None,
        stt_factory: SttFactory | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.call_sid = call_sid
        self.caller = caller
        self.parameters: dict[str, str] = dict(parameters or {})
        self.tap = tap
        self.stt_factory = stt_factory
        self.log = CallLogger(log, {"call_sid": call_sid})

        self.inbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=INBOUND_MAX_FRAMES)
        self.inbound_dropped = 0
        #: When set, caller frames go straight to it instead of the ``inbound`` queue (the echo
        #: line sends each frame back from the receive path, with no queue and no task switch).
        self.inbound_sink: Callable[[bytes], None] | None = None
        self._outbound: collections.deque[OutboundItem] = collections.deque()
        self._outbound_ready = asyncio.Event()
        #: While True, queuing an outbound item does not wake the task waiting in
        #: :meth:`wait_outbound`: the driver's receive pump sets it around :meth:`put_inbound` and
        #: sends what the frame queued itself (the echo's reply leaves without a task switch).
        self.hold_outbound_wakeup = False
        #: :meth:`speak` keeps a prompt's audio at most this many seconds ahead of real time (the
        #: driver sets it for far ends that play in real time); None sends audio as fast as it comes.
        self.send_ahead_s: float | None = None

        self._marks = MarkLedger()
        self._mark_waiters: dict[str, asyncio.Future[MarkOutcome]] = {}

        self.disconnected = asyncio.Event()
        self.hangup_requested = asyncio.Event()
        self.hangup_reason: str | None = None
        self.disconnect_reason: str | None = None
        self._listeners: list[CallListener] = []
        self.stt: SpeechToText | None = None
        self._stt_span: Span = NO_SPAN  # ops: the recognizer's session, one trace span

    # -- events ---------------------------------------------------------------------------

    def subscribe(self, listener: CallListener) -> Callable[[], None]:
        """Call ``listener`` with every event of this call; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: CallEvent) -> None:
        """Hand ``event`` to every listener. A listener that raises is logged, never fatal to the call."""
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.exception("a call listener failed on %s", type(event).__name__)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def is_disconnected(self) -> bool:
        """True once the call has ended, for whatever reason."""
        return self.disconnected.is_set()

    def signal_disconnected(self, reason: str) -> bool:
        """The call is over. Runs once: later calls return False and change nothing."""
        if self.disconnected.is_set():
            return False
        self.disconnect_reason = reason
        self.disconnected.set()
        self._outbound.clear()
        self._outbound_ready.set()
        for name in self._marks.disconnect():
            self._resolve_mark(name, MarkOutcome.DISCONNECTED)
        for waiter in self._mark_waiters.values():
            if not waiter.done():
                waiter.set_result(MarkOutcome.DISCONNECTED)
        self._mark_waiters.clear()
        self.clear_inbound()
        with contextlib.suppress(asyncio.QueueFull):
            self.inbound.put_nowait(None)
        self.log.info("call ended: %s", reason)
        self.emit(Disconnected(reason))
        return True

    # -- inbound audio --------------------------------------------------------------------

    def put_inbound(self, frame: bytes) -> None:
        """Queue one caller frame for the recognizer; when it lags 10 s behind, the oldest frame goes."""
        if self.disconnected.is_set():
            return
        if self.tap is not None:
            self.tap.tap_caller(frame)
        if self.inbound_sink is not None:
            self.inbound_sink(frame)
            return
        if self.inbound.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.inbound.get_nowait()
            self.inbound_dropped += 1
        self.inbound.put_nowait(frame)

    def clear_inbound(self) -> int:
        """Drop caller audio nobody has read yet (stale audio); returns how many frames went."""
        dropped = 0
        while True:
            try:
                frame = self.inbound.get_nowait()
            except asyncio.QueueEmpty:
                return dropped
            if frame is None:  # the end-of-audio sentinel must survive a clear
                self.inbound.put_nowait(None)
                return dropped
            dropped += 1

    # -- outbound audio, marks and intents ------------------------------------------------

    def put_outbound(self, ulaw: bytes) -> None:
        """Queue agent audio for the caller, in order with marks. Ignored once the call has ended."""
        if self.disconnected.is_set() or not ulaw:
            return
        if self.tap is not None:
            self.tap.tap_agent(ulaw)
        self._outbound.append(PlayAudio(ulaw))
        self._wake_sender()

    def _wake_sender(self) -> None:
        if not self.hold_outbound_wakeup:
            self._outbound_ready.set()

    async def next_outbound(self) -> OutboundItem | None:
        """The next item the transport must send; None once the call has ended."""
        if await self.wait_outbound():
            return self._outbound.popleft()
        return None

    async def wait_outbound(self) -> bool:
        """Wait until an item is queued for the transport (True), or the call has ended with none (False)."""
        while not self._outbound:
            if self.disconnected.is_set():
                return False
            self._outbound_ready.clear()
            await self._outbound_ready.wait()
        return True

    @property
    def has_outbound(self) -> bool:
        """An item is queued for the transport."""
        return bool(self._outbound)

    def take_outbound(self) -> OutboundItem | None:
        """The next queued item for the transport, without waiting; None when nothing is queued."""
        return self._outbound.popleft() if self._outbound else None

    def place_mark(self, label: str) -> tuple[str, asyncio.Future[MarkOutcome]]:
        """Queue a uniquely named mark after the audio queued so far; the future settles on its echo."""
        waiter: asyncio.Future[MarkOutcome] = self.loop.create_future()
        if self.disconnected.is_set():
            waiter.set_result(MarkOutcome.DISCONNECTED)
            return label, waiter
        name = self._marks.new(label)
        self._mark_waiters[name] = waiter
        self._outbound.append(PlaceMark(name))
        self._wake_sender()
        return name, waiter

    async def play_mark(self, label: str, timeout_s: float | None = None) -> MarkOutcome:
        """Place a mark and wait until the audio before it has played, been cleared, or the call ends.

        Raises TimeoutError when ``timeout_s`` passes first (the mark is then forgotten).
        """
        name, waiter = self.place_mark(label)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(waiter)
        finally:
            self._mark_waiters.pop(name, None)

    def mark_echoed(self, name: str) -> MarkOutcome:
        """The transport received the echo of mark ``name``; settle its waiter."""
        outcome = self._marks.echoed(name)
        if outcome is MarkOutcome.UNKNOWN:
            self.log.debug("ignored an echo of unknown mark %r", name)
            return outcome
        self._resolve_mark(name, outcome)
        self.emit(MarkReceived(name, interrupted=outcome is MarkOutcome.INTERRUPTED))
        return outcome

    def _resolve_mark(self, name: str, outcome: MarkOutcome) -> None:
        waiter = self._mark_waiters.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def request_clear_buffer(self) -> None:
        """Barge-in: drop queued agent audio, settle pending marks as interrupted, and tell the transport."""
        if self.disconnected.is_set():
            return
        self._outbound = collections.deque(item for item in self._outbound if isinstance(item, ClearBuffer))
        if self.tap is not None:
            self.tap.clear_agent()
        for name in self._marks.clear():
            self._resolve_mark(name, MarkOutcome.INTERRUPTED)
        self._outbound.appendleft(ClearBuffer())
        self._wake_sender()

    def request_disconnect(self, reason: str = "hangup") -> None:
        """Ask the transport to end the call. The first reason given is kept."""
        if self.hangup_requested.is_set() or self.disconnected.is_set():
            return
        self.hangup_reason = reason
        self.hangup_requested.set()

    # -- speech ---------------------------------------------------------------------------

    async def speak(
        self,
        tts: TextToSpeech,
        text: str,
        *,
        label: str = "prompt",
        mark_timeout_s: float = 30.0,
    ) -> SpeakResult:
        """Synthesize ``text``, stream it to the caller, and wait until its mark says it played.

        Cancel the task running ``speak`` to interrupt it (barge-in); the caller's buffer is
        cleared and the result says ``interrupted``. Never raises for provider failures: they
        come back as ``SpeakResult.error`` and through ``tts.on_error``.
        """
        if self.disconnected.is_set():
            return SpeakResult(text, "", call_disconnected=True)
        if self.stt is not None:
            self.stt.set_speaking(True)
        framer = Framer()
        outgoing = _PromptAudio(self)
        try:
            try:
                # aclosing: a generator left early is closed now, not later by the garbage collector.
                async with contextlib.aclosing(tts.synthesize(text)) as chunks:
                    async for chunk in chunks:
                        if self.disconnected.is_set():
                            return SpeakResult(text, "", call_disconnected=True)
                        outgoing.add(framer.push_whole(chunk))
                        await self._pace(outgoing.began, outgoing.total_bytes)
                outgoing.add(framer.flush() or b"")
                outgoing.send_gathered()
            except ProviderError as exc:
                return self._speak_failed(tts, text, str(exc))
            except (OSError, TimeoutError) as exc:
                return self._speak_failed(tts, text, f"{type(exc).__name__}: {exc}")
            if outgoing.total_bytes == 0:
                return self._speak_failed(tts, text, "the synthesizer produced no audio")
            try:
                outcome = await self.play_mark(label, timeout_s=mark_timeout_s)
            except TimeoutError:
                return self._speak_failed(
                    tts, text, f"playback was not confirmed within {mark_timeout_s:g} s"
                )
        except asyncio.CancelledError:
            self.request_clear_buffer()
            raise
        finally:
            outgoing.drop_gathered()  # unsent audio of an interrupted or failed prompt is never heard
            if self.stt is not None:
                self.stt.set_speaking(False)
        if outcome is MarkOutcome.PLAYED:
            return SpeakResult(text, text)
        if outcome is MarkOutcome.INTERRUPTED:
            return SpeakResult(text, "", interrupted=True)
        return SpeakResult(text, "", call_disconnected=True)

    async def _pace(self, began: float, sent_bytes: int) -> None:
        """Wait while the audio queued since ``began`` runs more than ``send_ahead_s`` ahead of playback."""
        if self.send_ahead_s is None:
            return
        # One mu-law byte per sample: the audio sent so far plays for sent_bytes / 8000 seconds.
        ahead_s = began + sent_bytes / SAMPLE_RATE_HZ - self.loop.time() - self.send_ahead_s
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)  # a barge-in cancels this like any other wait in speak()

    def _speak_failed(self, tts: TextToSpeech, text: str, reason: str) -> SpeakResult:
        self.log.warning("could not speak %r: %s", text[:40], reason)
        if tts.on_error is not None:
            try:
                tts.on_error(reason)
            except Exception:
                self.log.exception("tts.on_error raised")
        return SpeakResult(text, "", error=reason)

    # -- speech recognition ---------------------------------------------------------------

    def build_stt(self) -> SpeechToText | None:
        """Build the recognizer from the call's factory and wire its results to the call's events."""
        if self.stt_factory is None:
            return None
        stt = self.stt_factory()
        stt.on_committed = lambda text: self.emit(Committed(text))
        stt.on_recognizing = lambda text: self.emit(Recognizing(text))
        stt.on_error = lambda reason: self.emit(SttError(reason))
        self.stt = stt
        return stt

    async def start_stt(self) -> None:
        """Build and start the recognizer; a start failure becomes an ``SttError`` event."""
        stt = self.stt or self.build_stt()
        if stt is None:
            return
        self._stt_span = start_span("voicefsm.stt", provider=getattr(stt, "name", type(stt).__name__))
        try:
            await stt.start(self.inbound)
        except ProviderError as exc:
            self.log.warning("speech recognition could not start: %s", exc)
            mark_error(self._stt_span, "the recognizer could not start")
            self.emit(SttError(str(exc)))

    async def stop_stt(self) -> None:
        """Stop the recognizer and forget it; errors while stopping are logged, not raised."""
        stt, self.stt = self.stt, None
        if stt is None:
            return
        stt_span, self._stt_span = self._stt_span, NO_SPAN
        try:
            await stt.stop()
        except Exception:
            self.log.exception("speech recognition did not stop cleanly")
        finally:
            stt_span.end()


class _PromptAudio:
    """One prompt's audio on its way to :meth:`Call.put_outbound`, in pieces of at most a second.

    Audio goes at once while the caller has less than ``GATHER_AHEAD_S`` of it queued (the first
    piece never waits); past that, chunks are gathered into one piece, sent when it holds a second,
    when the prompt ends, or by a timer when the caller's queue is down to ``GATHER_FLUSH_S``. How
    much is queued is reckoned as if playback began when the prompt did and never paused, which is
    never more than the caller really has. Far ends that do not play in real time
    (``send_ahead_s`` None) get every chunk as it comes.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.began = call.loop.time()
        self.total_bytes = 0
        self._sent_bytes = 0
        self._gathered = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, audio: bytes) -> None:
        """Queue whole frames of the prompt for the caller, now or gathered for a moment."""
        if not audio:
            return
        self.total_bytes += len(audio)
        if self.call.send_ahead_s is None:
            self._send(audio)
            return
        self._gathered += audio
        queued_until = self.began + self._sent_bytes / SAMPLE_RATE_HZ
        if len(self._gathered) >= SPEAK_PIECE_BYTES or queued_until - self.call.loop.time() < GATHER_AHEAD_S:
            self.send_gathered()
        elif self._timer is None:
            self._timer = self.call.loop.call_at(queued_until - GATHER_FLUSH_S, self.send_gathered)

    def send_gathered(self) -> None:
        """Queue what has been gathered, now."""
        self._cancel_timer()
        if self._gathered:
            audio = bytes(self._gathered)
            self._gathered.clear()
            self._send(audio)

    def drop_gathered(self) -> None:
        """Forget what has been gathered and stop its timer (the prompt ended early)."""
        self._cancel_timer()
        self._gathered.clear()

    def _send(self, audio: bytes) -> None:
        for start in range(0, len(audio), SPEAK_PIECE_BYTES):
            self.call.put_outbound(audio[start : start + SPEAK_PIECE_BYTES])
        self._sent_bytes += len(audio)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
