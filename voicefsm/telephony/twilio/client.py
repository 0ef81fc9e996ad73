"""The Twilio side of a Media Stream, for tests, the bridge and benchmarks.

:class:`TwilioStreamClient` connects to a voicefsm server exactly as Twilio does (an
optionally signed WebSocket upgrade, ``connected``, ``start`` with custom parameters,
media, dtmf, mark echoes, ``stop``) and plays the agent's audio like a phone: a mark is
echoed once the audio queued before it has played, and a ``clear`` drops buffered audio
and echoes the pending marks at once. Playback is instant by default or paced at real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voicefsm.core.audio import FRAME_BYTES, ULAW_SILENCE
from voicefsm.telephony.twilio.media import (
    MalformedMessage,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    connected_message,
    dtmf_message,
    inbound_media_message,
    mark_echo_message,
    parse_outbound,
    start_message,
    stop_message,
)

Playback = Literal["instant", "realtime"]
BYTES_PER_SECOND = 8000


@dataclass(slots=True)
class ReceivedItem:
    """Something the server sent, in arrival order: ``kind`` is media, mark or clear."""

    kind: str
    name: str | None = None
    payload: bytes = b""
    at: float = field(default_factory=time.monotonic)


class TwilioStreamClient:
    """A fake Twilio that phones a voicefsm media-stream URL. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        playback: Playback = "instant",
    ) -> None:
        self.url = url
        self.call_sid = call_sid or f"CA{secrets.token_hex(16)}"
        self.stream_sid = stream_sid or f"MZ{secrets.token_hex(16)}"
        self.custom_parameters = dict(custom_parameters or {})
        self.headers = dict(headers or {})
        self.playback = playback
        self.received: list[ReceivedItem] = []
        self.agent_audio = bytearray()
        self.played_marks: list[str] = []
        self.cleared_marks: list[str] = []
        self.clears = 0
        self.close_code: int | None = None
        self._ws: ClientConnection | None = None
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._started_at = time.monotonic()
        self._changed = asyncio.Condition()
        self._pending_marks: list[tuple[str, float]] = []
        self._playback_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connection ---------------------------------------------------------------------

    async def __aenter__(self) -> TwilioStreamClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, *, start: bool = True) -> None:
        """Connect, then send ``connected`` and (unless ``start=False``) ``start``."""
        self._ws = await connect(self.url, additional_headers=self.headers, max_size=2**20, open_timeout=10)
        self._tasks.add(asyncio.create_task(self._read(), name="fake-twilio-read"))
        await self.send_raw(connected_message())
        if start:
            await self.start()

    async def start(self) -> None:
        """Send the ``start`` message with this client's sids and custom parameters."""
        self._started_at = time.monotonic()
        await self.send_raw(
            start_message(
                self.stream_sid,
                self.call_sid,
                custom_parameters=self.custom_parameters,
                sequence_number=next(self._sequence),
            )
        )

    async def close(self) -> None:
        """Close the socket (an abrupt hang-up when no ``stop`` was sent) and end every task."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def closed(self) -> bool:
        """The server closed the connection (or we did)."""
        return self.close_code is not None

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one frame as is: for malformed-input tests."""
        if self._ws is None:
            raise RuntimeError("open() the client before sending")
        await self._ws.send(frame)

    # -- what a caller does -------------------------------------------------------------

    async def send_media(self, ulaw: bytes) -> None:
        """Send one media message (normally 160 bytes = 20 ms)."""
        timestamp_ms = int((time.monotonic() - self._started_at) * 1000)
        await self.send_raw(
            inbound_media_message(
                self.stream_sid,
                ulaw,
                chunk=next(self._chunk),
                timestamp_ms=timestamp_ms,
                sequence_number=next(self._sequence),
            )
        )

    async def stream_audio(self, ulaw: bytes, *, realtime: bool = True) -> None:
        """Send ``ulaw`` as 20 ms frames, paced at 50 frames per second on a monotonic clock."""
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        begin = time.monotonic()
        for index, frame in enumerate(frames):
            if realtime:
                delay = begin + index * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_media(frame.ljust(FRAME_BYTES, bytes([ULAW_SILENCE])))

    async def press(self, digit: str) -> None:
        """Press a key on the caller's keypad."""
        await self.send_raw(dtmf_message(self.stream_sid, digit, sequence_number=next(self._sequence)))

    async def stop(self) -> None:
        """Send ``stop``, as Twilio does when the caller hangs up."""
        await self.send_raw(
            stop_message(self.stream_sid, self.call_sid, sequence_number=next(self._sequence))
        )

    # -- what the agent did -------------------------------------------------------------

    async def wait_for(self, kind: str, *, count: int = 1, timeout_s: float = 5.0) -> list[ReceivedItem]:
        """Wait until ``count`` items of ``kind`` (media, mark, clear) have arrived; return them."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.items(kind)) >= count)
        return self.items(kind)

    async def wait_until(self, predicate: object, *, timeout_s: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; it is re-checked whenever something arrives."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)  # type: ignore[arg-type]

    async def wait_closed(self, timeout_s: float = 5.0) -> int:
        """Wait until the server closes the connection; return the close code."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.close_code is not None)
        assert self.close_code is not None
        return self.close_code

    def items(self, kind: str) -> list[ReceivedItem]:
        """Everything of ``kind`` received so far."""
        return [item for item in self.received if item.kind == kind]

    # -- the phone's side of playback ---------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                await self._handle(frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code if self._ws.close_code is not None else 1006
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, frame: str | bytes) -> None:
        message = parse_outbound(frame)
        now = time.monotonic()
        if isinstance(message, MalformedMessage):
            raise AssertionError(f"the server sent a malformed frame: {message}")
        if isinstance(message, OutboundMedia):
            self.received.append(ReceivedItem("media", payload=message.payload, at=now))
            self.agent_audio += message.payload
            self._playback_until = max(self._playback_until, now) + len(message.payload) / BYTES_PER_SECOND
        elif isinstance(message, OutboundMark):
            self.received.append(ReceivedItem("mark", name=message.name, at=now))
            if self.playback == "instant" or self._playback_until <= now:
                await self._echo(message.name)
            else:
                self._pending_marks.append((message.name, self._playback_until))
                task = asyncio.create_task(self._echo_when_played(message.name, self._playback_until))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(message, OutboundClear):
            self.received.append(ReceivedItem("clear", at=now))
            self.clears += 1
            self._playback_until = now
            pending, self._pending_marks = self._pending_marks, []
            for name, _ in pending:
                self.cleared_marks.append(name)
                await self._echo(name, played=False)
        async with self._changed:
            self._changed.notify_all()

    async def _echo_when_played(self, name: str, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if any(pending == name for pending, _ in self._pending_marks):
            self._pending_marks = [(n, d) for n, d in self._pending_marks if n != name]
            await self._echo(name)
            async with self._changed:
                self._changed.notify_all()

    async def _echo(self, name: str, *, played: bool = True) -> None:
        if played:
            self.played_marks.append(name)
        with contextlib.suppress(ConnectionClosed):
            await self.send_raw(
                mark_echo_message(self.stream_sid, name, sequence_number=next(self._sequence))
            )
