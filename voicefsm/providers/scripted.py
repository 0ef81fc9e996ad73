"""Deterministic providers for tests and for ``voicefsm chat``: no audio model, no network.

``ScriptedSpeechToText`` hears what a test tells it to (:meth:`say`), and
``ScriptedTextToSpeech`` records every text it is asked to speak and yields silence of a
realistic length. Both can be told to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from voicefsm.core.audio import FRAME_BYTES, ULAW_SILENCE
from voicefsm.errors import ProviderError
from voicefsm.providers.base import RecognitionHints, TextCallback

#: About 15 characters of speech per second, the pace of a calm phone voice.
MS_PER_CHARACTER = 65


class ScriptedSpeechToText:
    """A recognizer that reports whatever :meth:`say` is given; it consumes audio and counts it."""

    name = "scripted"

    def __init__(self) -> None:
        self.on_committed: TextCallback | None = None
        self.on_recognizing: TextCallback | None = None
        self.on_error: TextCallback | None = None
        self.speaking = False
        self.hints = RecognitionHints()
        self.frames_received = 0
        self.started = False
        self.stopped = False
        self._reader: asyncio.Task[None] | None = None

    def set_speaking(self, speaking: bool) -> None:
        self.speaking = speaking

    def set_hints(self, hints: RecognitionHints) -> None:
        self.hints = hints

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        if self.started:
            raise RuntimeError("ScriptedSpeechToText.start() was called twice; build one recognizer per call")
        self.started = True
        self._reader = asyncio.create_task(self._read(audio), name="scripted-stt-reader")

    async def _read(self, audio: asyncio.Queue[bytes | None]) -> None:
        while (frame := await audio.get()) is not None:
            self.frames_received += 1
            del frame

    def say(self, text: str, *, partials: bool = True) -> None:
        """Recognise ``text`` as one utterance: interim hypotheses word by word, then the final."""
        if partials and self.on_recognizing is not None:
            words = text.split()
            for end in range(1, len(words)):
                self.on_recognizing(" ".join(words[:end]))
        if self.on_committed is not None:
            self.on_committed(text)

    def fail(self, reason: str = "scripted recognizer failure") -> None:
        """Report a fatal recognition error, as a provider does when retries are exhausted."""
        if self.on_error is not None:
            self.on_error(reason)

    async def stop(self) -> None:
        self.stopped = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


class ScriptedTextToSpeech:
    """A synthesizer that records texts and yields mu-law silence as long as the text would take to say."""

    name = "scripted"

    def __init__(self, *, ms_per_character: int = MS_PER_CHARACTER, chunk_frames: int = 10) -> None:
        self.on_error: TextCallback | None = None
        self.spoken: list[str] = []
        self.ms_per_character = ms_per_character
        self.chunk_frames = chunk_frames
        self._failures: list[str] = []
        self.fail_always: str | None = None

    def fail_next(self, reason: str = "scripted synthesis failure") -> None:
        """Make the next :meth:`synthesize` call fail with ``reason``."""
        self._failures.append(reason)

    def audio_bytes_for(self, text: str) -> int:
        """How many mu-law bytes :meth:`synthesize` yields for ``text`` (whole 20 ms frames)."""
        ms = max(len(text), 1) * self.ms_per_character
        return max(1, ms // 20) * FRAME_BYTES

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if self.fail_always is not None:
            raise ProviderError("scripted-tts", self.fail_always)
        if self._failures:
            raise ProviderError("scripted-tts", self._failures.pop(0))
        self.spoken.append(text)
        remaining = self.audio_bytes_for(text)
        chunk = bytes([ULAW_SILENCE]) * (FRAME_BYTES * self.chunk_frames)
        while remaining > 0:
            size = min(remaining, len(chunk))
            remaining -= size
            yield chunk[:size]
            await asyncio.sleep(0)  # a real provider yields between chunks; so do we

    async def aclose(self) -> None:
        return None
