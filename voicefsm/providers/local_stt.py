"""Offline speech recognition: pocketsphinx, constrained by what the caller is expected to say.

Open-vocabulary pocketsphinx is poor on phone audio, but a closed grammar of the phrases the
current state expects (yes/no, a menu, days, times ...) recognises them exactly and fast
(research/offline.md: 0 % WER, ~21 ms of CPU per second of audio). So every listening state's
hints become a JSGF grammar; free-text states fall back to the bundled language model.

Endpointing is webrtcvad on the 8 kHz frames: speech start reports ``on_recognizing`` (which
lets the caller barge in), and a configurable silence after speech commits the utterance.
Decoding runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from voicefsm.core.audio import FRAME_BYTES, Resampler, ulaw_decode
from voicefsm.errors import ProviderUnavailable
from voicefsm.providers.base import RecognitionHints, TextCallback
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z']+")


def jsgf_grammar(phrases: tuple[str, ...], known: Any) -> str | None:
    """A JSGF grammar accepting exactly ``phrases`` (those whose words the dictionary knows), or None."""
    alternatives = []
    for phrase in phrases:
        words = _WORD.findall(phrase.lower())
        if words and all(known(word) for word in words):
            alternatives.append("(" + " ".join(words) + ")")
    if not alternatives:
        return None
    body = " | ".join(sorted(set(alternatives)))
    return f"#JSGF V1.0;\ngrammar expected;\npublic <utterance> = {body};\n"


class PocketsphinxSpeechToText:
    """A per-call offline recognizer: webrtcvad endpointing + pocketsphinx decoding at 16 kHz."""

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
            import webrtcvad
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ProviderUnavailable(
                "local-stt", "needs pocketsphinx and webrtcvad: pip install pocketsphinx webrtcvad-wheels"
            ) from exc
        self._decoder_class = Decoder
        self._vad = webrtcvad.Vad(vad_aggressiveness)
        self.on_committed: TextCallback | None = None
        self.on_recognizing: TextCallback | None = None
        self.on_error: TextCallback | None = None
        self.end_of_speech_frames = max(1, end_of_speech_ms // 20)
        self.start_of_speech_frames = max(1, start_of_speech_ms // 20)
        self.min_utterance_frames = max(1, min_utterance_ms // 20)
        self._hints = RecognitionHints()
        self._speaking = False
        self._decoder: Any = None
        self._grammar_for: RecognitionHints | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PocketsphinxSpeechToText:
        return cls()

    def set_speaking(self, speaking: bool) -> None:
        # Barge-in needs the caller's speech while the agent talks, so speech is never muted here;
        # browser and phone echo cancellation keep the agent's own voice out of the caller's leg.
        self._speaking = speaking

    def set_hints(self, hints: RecognitionHints) -> None:
        self._hints = hints

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        self._decoder = await asyncio.to_thread(self._decoder_class, samprate=16000, loglevel="FATAL")
        self._reader = asyncio.create_task(self._listen(audio), name="local-stt-listen")

    async def stop(self) -> None:
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
            voiced = self._vad.is_speech(pcm, 8000)
            if not in_speech:
                lead_in = [*lead_in[-(self.start_of_speech_frames + 5) :], pcm]
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
                if len(utterance) - silent_run >= self.min_utterance_frames:
                    await self._commit(b"".join(utterance))
                utterance = []

    async def _commit(self, pcm8k: bytes) -> None:
        try:
            text = await asyncio.to_thread(self._decode, pcm8k, self._hints)
        except Exception as exc:  # the decoder is native code; report, don't crash the call
            log.exception("pocketsphinx failed to decode an utterance")
            if self.on_error is not None:
                self.on_error(f"local recognizer failed: {exc}")
            return
        if self.on_committed is not None:
            self.on_committed(text)

    def _decode(self, pcm8k: bytes, hints: RecognitionHints) -> str:
        decoder = self._decoder
        self._use_grammar(hints)
        pcm16k = Resampler(8000, 16000).process(pcm8k, last=True)
        decoder.start_utt()
        decoder.process_raw(pcm16k, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return str(hypothesis.hypstr).strip() if hypothesis is not None else ""

    def _use_grammar(self, hints: RecognitionHints) -> None:
        if hints == self._grammar_for:
            return
        decoder = self._decoder
        grammar = None if hints.open_vocabulary else jsgf_grammar(hints.phrases, decoder.lookup_word)
        if grammar is None:
            decoder.activate_search("_default")
        else:
            decoder.add_jsgf_string("expected", grammar)
            decoder.activate_search("expected")
        self._grammar_for = hints
