"""Offline speech recognition: pocketsphinx, constrained by what the caller is expected to say.

Open-vocabulary pocketsphinx is poor on phone audio, but a closed grammar of the phrases the
current state expects (yes/no, a menu, days, times ...) recognises them far better and fast
(research/offline.md). So every listening state's hints become a grammar
(:mod:`voicefsm.providers.local_grammar`); free-text states fall back to the bundled language
model.

Endpointing is webrtcvad on the 8 kHz frames: speech start reports ``on_recognizing`` (which
lets the caller barge in), and a configurable silence after speech commits the utterance.
Decoding runs in worker processes (:mod:`voicefsm.providers.local_decoder`), because
pocketsphinx holds the GIL while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from voicefsm.core.audio import FRAME_BYTES, ulaw_decode
from voicefsm.errors import ProviderUnavailable
from voicefsm.providers import local_decoder
from voicefsm.providers.base import RecognitionHints, TextCallback
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

FRAME_MS = 20
#: Audio kept around the voiced part of an utterance: enough for soft word edges, little silence.
MARGIN_FRAMES = 3
#: Frames quieter than this (RMS, 16-bit; about -47 dBFS) are silence whatever webrtcvad says: it
#: adapts to the line and, after a long utterance, can take steady line hiss for speech.
QUIET_RMS = 150.0
#: Decoding an utterance takes well under a second; a worker that takes this long is stuck.
DECODE_DEADLINE_S = 10.0


class PocketsphinxSpeechToText:
    """A per-call offline recognizer: webrtcvad endpointing, pocketsphinx decoding in a worker process."""

    name = "local"

    def __init__(
        self,
        *,
        end_of_speech_ms: int = 700,
        start_of_speech_ms: int = 100,
        min_utterance_ms: int = 200,
        vad_aggressiveness: int = 2,
    ) -> None:
        try:
            import pocketsphinx  # noqa: F401  (checked here; the workers import it)
            import webrtcvad
        except ImportError as exc:
            raise ProviderUnavailable(
                "local-stt", "needs pocketsphinx and webrtcvad: pip install pocketsphinx webrtcvad-wheels"
            ) from exc
        self._vad = webrtcvad.Vad(vad_aggressiveness)
        self.on_committed: TextCallback | None = None
        self.on_recognizing: TextCallback | None = None
        self.on_error: TextCallback | None = None
        self.end_of_speech_frames = max(1, end_of_speech_ms // FRAME_MS)
        self.start_of_speech_frames = max(1, start_of_speech_ms // FRAME_MS)
        self.min_utterance_frames = max(1, min_utterance_ms // FRAME_MS)
        self.utterances = 0
        self._hints = RecognitionHints()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PocketsphinxSpeechToText:
        """The model ships in the pocketsphinx wheel; STT_VAD_SILENCE_S of quiet ends an utterance."""
        return cls(end_of_speech_ms=round(settings.stt_vad_silence_threshold_s * 1000))

    def set_speaking(self, speaking: bool) -> None:
        """Ignored: barge-in needs the caller's speech while the agent talks.

        Browser and phone echo cancellation keep the agent's own voice out of the caller's leg.
        """

    def set_hints(self, hints: RecognitionHints) -> None:
        """Listen for ``hints.phrases`` from the next utterance on (any words if open vocabulary)."""
        self._hints = hints

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        """Start endpointing ``audio``; the decoder workers start now if they are not running yet."""
        if self._reader is not None:
            raise RuntimeError("PocketsphinxSpeechToText.start() was called twice; build one per call")
        local_decoder.warm_up()
        self._reader = asyncio.create_task(self._listen(audio), name="local-stt-listen")

    async def stop(self) -> None:
        """Stop listening; an utterance being decoded is abandoned."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    # -- endpointing and decoding -----------------------------------------------------

    async def _listen(self, audio: asyncio.Queue[bytes | None]) -> None:
        voiced_run = 0
        silent_run = 0
        in_speech = False
        utterance: list[bytes] = []
        lead_in: list[bytes] = []
        while (frame := await audio.get()) is not None:
            if len(frame) != FRAME_BYTES:
                continue
            pcm = ulaw_decode(frame)
            voiced = _loud(pcm) and self._vad.is_speech(pcm, 8000)
            if not in_speech:
                lead_in = [*lead_in[-(self.start_of_speech_frames + MARGIN_FRAMES - 1) :], pcm]
                voiced_run = voiced_run + 1 if voiced else 0
                if voiced_run >= self.start_of_speech_frames:
                    in_speech, silent_run, utterance = True, 0, list(lead_in)
                    if self.on_recognizing is not None:
                        self.on_recognizing("")
                continue
            utterance.append(pcm)
            silent_run = 0 if voiced else silent_run + 1
            if silent_run >= self.end_of_speech_frames:
                in_speech, voiced_run = False, 0
                spoken = utterance[: len(utterance) - silent_run + MARGIN_FRAMES]
                if len(spoken) - 2 * MARGIN_FRAMES >= self.min_utterance_frames:
                    await self._commit(b"".join(spoken))
                utterance = []
        if in_speech and len(utterance) - MARGIN_FRAMES >= self.min_utterance_frames:
            await self._commit(b"".join(utterance))  # the audio ended mid-sentence: what was said counts

    async def _commit(self, pcm8k: bytes) -> None:
        hints = self._hints
        phrases = None if hints.open_vocabulary or not hints.phrases else hints.phrases
        try:
            async with asyncio.timeout(DECODE_DEADLINE_S):  # a hung worker must not hold the call
                text = await local_decoder.decode(pcm8k, phrases, repeatable=hints.repeatable)
        except Exception as exc:  # a worker crashed: report it, the call goes on with the flow's handling
            log.exception("pocketsphinx failed to decode an utterance")
            if self.on_error is not None:
                self.on_error(f"local recognizer failed: {type(exc).__name__}: {exc}")
            return
        self.utterances += 1
        if self.on_committed is not None:
            self.on_committed(text)


def _loud(pcm: bytes) -> bool:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples))) >= QUIET_RMS
