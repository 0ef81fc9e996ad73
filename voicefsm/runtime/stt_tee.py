"""Run two recognizers on the same caller audio: the primary drives the call, the secondary only listens.

The secondary gets every frame through a bounded buffer; when it falls behind, frames are
dropped and counted rather than slowing the primary. Nothing the secondary does (errors,
a failed start, a slow stop) ever reaches the call. Its transcripts go to
``on_secondary_committed`` for logging and comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from voicefsm.providers.base import RecognitionHints, SpeechToText, TextCallback

log = logging.getLogger(__name__)

SECONDARY_BUFFER_FRAMES = 250  # 5 s of audio


class SttTee:
    """A SpeechToText that fans caller audio out to a primary and a best-effort secondary."""

    def __init__(
        self,
        primary: SpeechToText,
        secondary: SpeechToText,
        *,
        secondary_buffer_frames: int = SECONDARY_BUFFER_FRAMES,
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.secondary_dropped = 0
        self.secondary_failed: str | None = None
        self.on_secondary_committed: TextCallback | None = None
        self._primary_audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._secondary_audio: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=secondary_buffer_frames)
        self._fanout: asyncio.Task[None] | None = None
        self._secondary_running = False

    # The call wires these; they belong to the primary alone.
    @property
    def on_committed(self) -> TextCallback | None:
        return self.primary.on_committed

    @on_committed.setter
    def on_committed(self, callback: TextCallback | None) -> None:
        self.primary.on_committed = callback

    @property
    def on_recognizing(self) -> TextCallback | None:
        return self.primary.on_recognizing

    @on_recognizing.setter
    def on_recognizing(self, callback: TextCallback | None) -> None:
        self.primary.on_recognizing = callback

    @property
    def on_error(self) -> TextCallback | None:
        return self.primary.on_error

    @on_error.setter
    def on_error(self, callback: TextCallback | None) -> None:
        self.primary.on_error = callback

    def set_speaking(self, speaking: bool) -> None:
        self.primary.set_speaking(speaking)
        with contextlib.suppress(Exception):
            self.secondary.set_speaking(speaking)

    def set_hints(self, hints: RecognitionHints) -> None:
        self.primary.set_hints(hints)
        with contextlib.suppress(Exception):
            self.secondary.set_hints(hints)

    def _secondary_error(self, reason: str) -> None:
        self.secondary_failed = reason
        log.warning("secondary recognizer failed (the call goes on): %s", reason)

    def _secondary_committed(self, text: str) -> None:
        if self.on_secondary_committed is not None:
            try:
                self.on_secondary_committed(text)
            except Exception:
                log.exception("on_secondary_committed raised")

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        self.secondary.on_committed = self._secondary_committed
        self.secondary.on_recognizing = None
        self.secondary.on_error = self._secondary_error
        await self.primary.start(self._primary_audio)
        try:
            await self.secondary.start(self._secondary_audio)
            self._secondary_running = True
        except Exception as exc:
            self._secondary_error(f"could not start: {exc}")
        self._fanout = asyncio.create_task(self._fan_out(audio), name="stt-tee-fanout")

    async def _fan_out(self, audio: asyncio.Queue[bytes | None]) -> None:
        while True:
            frame = await audio.get()
            self._primary_audio.put_nowait(frame)
            if self._secondary_running:
                try:
                    self._secondary_audio.put_nowait(frame)
                except asyncio.QueueFull:
                    self.secondary_dropped += 1
            if frame is None:
                return

    async def stop(self) -> None:
        if self._fanout is not None:
            self._fanout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fanout
            self._fanout = None
        try:
            await self.primary.stop()
        finally:
            if self._secondary_running:
                self._secondary_running = False
                try:
                    async with asyncio.timeout(5):
                        await self.secondary.stop()
                except Exception as exc:
                    log.warning("secondary recognizer did not stop cleanly: %s", exc)
