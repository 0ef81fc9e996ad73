"""Offline speech with espeak-ng: no account, no network, robotic but clear.

The ``espeakng-loader`` wheel carries libespeak-ng and its data, so nothing needs apt; when
the wheel is missing, the ``espeak-ng`` program is used if it is on PATH. espeak-ng is
GPL-3.0-or-later: it runs as a separate library or program and is not part of voicefsm's code.

Synthesis is blocking C code, so it runs in a worker thread; the library keeps one global
engine, so one lock serialises it across calls (a prompt of a few seconds takes a few ms).
"""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import subprocess
import threading
from collections.abc import AsyncGenerator
from typing import Any

from voicefsm.core.audio import FRAME_BYTES, resample, ulaw_encode
from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.base import TextCallback
from voicefsm.settings import Settings

_ENGINE_LOCK = threading.Lock()
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_END_PAUSE = 0x1000
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _LibraryEngine:
    """libespeak-ng from the espeakng-loader wheel, driven through ctypes."""

    def __init__(self, voice: str) -> None:
        import espeakng_loader

        self._lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate_hz = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0))
        if self.sample_rate_hz <= 0:
            raise ProviderUnavailable("local-tts", "libespeak-ng failed to initialise its data")
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ProviderUnavailable("local-tts", f"espeak-ng has no voice {voice!r}; try en-us")
        self._chunks: list[bytes] = []
        # The callback object must outlive every synthesis, so the engine keeps it.
        self._callback = _SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, samples: int, events: Any) -> int:
        if samples > 0:
            self._chunks.append(ctypes.string_at(wav, samples * 2))
        return 0

    def synthesize(self, text: str) -> bytes:
        self._chunks = []
        encoded = text.encode() + b"\0"
        flags = _ESPEAK_CHARS_UTF8 | _ESPEAK_END_PAUSE
        self._lib.espeak_Synth(encoded, len(encoded), 0, 0, 0, flags, None, None)
        self._lib.espeak_Synchronize()
        return b"".join(self._chunks)


class _ProgramEngine:
    """The ``espeak-ng`` program (apt's espeak-ng), writing a WAV to stdout."""

    sample_rate_hz = 22050

    def __init__(self, voice: str, program: str) -> None:
        self.voice = voice
        self.program = program

    def synthesize(self, text: str) -> bytes:
        done = subprocess.run(
            [self.program, "-v", self.voice, "--stdout", text], capture_output=True, check=False, timeout=30
        )
        if done.returncode != 0 or len(done.stdout) <= 44:
            reason = done.stderr.decode(errors="replace")[:200]
            raise ProviderError("local-tts", f"espeak-ng failed: {reason}")
        return done.stdout[44:]  # a canonical 44-byte RIFF header precedes the samples


_engines: dict[str, _LibraryEngine | _ProgramEngine] = {}


def _engine(voice: str) -> _LibraryEngine | _ProgramEngine:
    engine = _engines.get(voice)
    if engine is None:
        try:
            engine = _LibraryEngine(voice)
        except ImportError:
            program = shutil.which("espeak-ng")
            if program is None:
                raise ProviderUnavailable(
                    "local-tts", "needs espeak-ng: pip install espeakng-loader (or apt-get install espeak-ng)"
                ) from None
            engine = _ProgramEngine(voice, program)
        _engines.clear()  # libespeak-ng has one global voice: keep one engine
        _engines[voice] = engine
    return engine


def synthesize_ulaw(text: str, voice: str = "en-us") -> bytes:
    """Blocking: ``text`` as 8 kHz mu-law. Safe from any thread (one synthesis at a time)."""
    with _ENGINE_LOCK:
        engine = _engine(voice)
        pcm = engine.synthesize(text)
        rate = engine.sample_rate_hz
    if not pcm:
        raise ProviderError("local-tts", f"espeak-ng produced no audio for {text[:40]!r}")
    return ulaw_encode(resample(pcm, rate, 8000))


class EspeakTextToSpeech:
    """Local text-to-speech with espeak-ng, 8 kHz mu-law out. One instance may serve many calls."""

    name = "local"

    def __init__(self, voice: str = "en-us", *, chunk_frames: int = 25) -> None:
        self.voice = voice
        self.chunk_bytes = FRAME_BYTES * chunk_frames
        self.on_error: TextCallback | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EspeakTextToSpeech:
        """English by default; VOICEFSM_LANGUAGE picks another espeak-ng voice (e.g. fi, de)."""
        language = settings.language
        return cls("en-us" if language in {"en", "en-US", "en-us"} else language.lower())

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        try:
            audio = await asyncio.to_thread(synthesize_ulaw, text, self.voice)
        except ProviderError:
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProviderError("local-tts", f"espeak-ng failed: {exc}") from exc
        for start in range(0, len(audio), self.chunk_bytes):
            yield audio[start : start + self.chunk_bytes]

    async def aclose(self) -> None:
        return None
