"""Twilio Media Streams over a server-side WebSocket (Starlette/FastAPI), as a neutral far end.

Each frame is parsed by :mod:`voicefsm.telephony.twilio.media` and handed on as the call
event it means (``start`` -> CallStarted, ``media`` -> AudioIn, ``mark`` -> MarkReached,
``dtmf`` -> KeyPressed, ``stop`` -> FarEndHungUp); the call's intents go out as Twilio frames.
The receive loop is total: every malformed frame becomes a :class:`MalformedMessage` that is
logged once per kind and dropped, so no input can end a call. The browser phone speaks this
same protocol, so it comes through here too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicefsm.core.events import AudioIn, FarEndEvent
from voicefsm.core.intents import ClearBuffer, OutboundItem, PlaceMark, PlayAudio
from voicefsm.core.rates import TokenBuckets
from voicefsm.errors import TransportClosed
from voicefsm.telephony.twilio.media import (
    Dtmf,
    MalformedMessage,
    Mark,
    Media,
    Start,
    Stop,
    clear_message,
    mark_message,
    media_message,
    neutral_event,
    parse_inbound,
)

log = logging.getLogger(__name__)

#: Keypad presses a caller can make in a burst, and per second after it: a phone's DTMF tones last
#: at least 40 ms with 40 ms gaps (about 12 a second), so more than this is a flood, not a caller.
DTMF_BURST = 20
DTMF_PER_S = 10.0


class TwilioMediaStream:
    """A :class:`~voicefsm.transports.base.FarEnd` over an accepted Starlette WebSocket."""

    #: Twilio echoes each mark once the audio before it has played (or was cleared).
    echoes_marks = True

    def __init__(self, websocket: WebSocket, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.websocket = websocket
        self.stream_sid: str | None = None
        #: Frames dropped or anomalies seen, by kind: the malformed kinds of
        #: :class:`~voicefsm.telephony.twilio.media.MalformedKind`, ``dtmf_flood`` (presses over the
        #: keypad rate), ``sequence_gap`` (sequence numbers that never came) and ``sequence_reordered``.
        self.dropped: Counter[str] = Counter()
        self._closed = False
        self._last_sequence: int | None = None
        self._keypad = TokenBuckets(DTMF_PER_S, DTMF_BURST, clock=clock)

    @property
    def started(self) -> bool:
        """A ``start`` message has arrived."""
        return self.stream_sid is not None

    async def receive(self) -> FarEndEvent | None:
        while not self._closed:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True
                return None
            if message["type"] == "websocket.disconnect":
                self._closed = True
                return None
            frame: str | bytes | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            parsed = parse_inbound(frame, started=self.started)
            if isinstance(parsed, tuple):  # a media message, 50 a second: (sequence number, audio)
                number, audio = parsed
                last = self._last_sequence
                if last is not None and number == last + 1:
                    self._last_sequence = number  # in order: nothing to count
                else:
                    self._sequence(number)
                return AudioIn(audio)
            if isinstance(parsed, MalformedMessage):
                self._drop(parsed)
                continue
            if isinstance(parsed, Start):
                if self.started:
                    log.warning("stream %s sent a second start; ignored", self.stream_sid)
                    continue
                self.stream_sid = parsed.stream_sid
            if isinstance(parsed, Media | Dtmf | Mark | Stop | Start):
                self._sequence(parsed.sequence_number)
            if isinstance(parsed, Dtmf) and not self._dtmf_allowed():
                continue
            event = neutral_event(parsed)
            if event is not None:
                return event
        return None

    def _drop(self, malformed: MalformedMessage) -> None:
        kind = malformed.kind.value
        self.dropped[kind] += 1
        if self.dropped[kind] == 1:  # once per kind: a flood of bad frames must not flood the log
            log.warning("stream %s: %s", self.stream_sid or "(not started)", malformed)

    def _sequence(self, number: int | None) -> None:
        """Count gaps and reordering in Twilio's ``sequenceNumber``; the frames themselves are kept."""
        if number is None:
            return
        last = self._last_sequence
        if last is not None:
            if number > last + 1:
                self.dropped["sequence_gap"] += number - last - 1
            elif number <= last:
                self.dropped["sequence_reordered"] += 1
                if self.dropped["sequence_reordered"] == 1:
                    log.info("stream %s: sequence number %d after %d", self.stream_sid, number, last)
                return
        self._last_sequence = number

    def _dtmf_allowed(self) -> bool:
        """A token bucket over keypad presses: a flood past :data:`DTMF_BURST` is dropped and counted."""
        if self._keypad.take() == 0.0:
            return True
        self.dropped["dtmf_flood"] += 1
        if self.dropped["dtmf_flood"] == 1:
            log.warning(
                "stream %s: keypad presses faster than %g a second; the excess is dropped",
                self.stream_sid,
                DTMF_PER_S,
            )
        return False

    async def send(self, item: OutboundItem) -> None:
        if self._closed or self.stream_sid is None:
            raise TransportClosed("the media stream is not open")
        if isinstance(item, PlayAudio):
            text = media_message(self.stream_sid, item.ulaw)
        elif isinstance(item, PlaceMark):
            text = mark_message(self.stream_sid, item.name)
        elif isinstance(item, ClearBuffer):
            text = clear_message(self.stream_sid)
        else:  # pragma: no cover - exhaustive over OutboundItem
            raise TypeError(f"cannot send {item!r}")
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self._closed = True
            raise TransportClosed(str(exc) or type(exc).__name__) from exc

    async def refuse(self, reason: str) -> None:
        """Close the stream as refused (WebSocket code 1008, policy violation)."""
        self._closed = True
        with contextlib.suppress(Exception):
            if self.websocket.application_state != WebSocketState.DISCONNECTED:
                await self.websocket.close(code=1008, reason=reason[:120])

    async def close(self, reason: str) -> None:
        if self._closed and self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if self.websocket.application_state != WebSocketState.DISCONNECTED:
                await self.websocket.close(code=1000, reason=reason[:120])
