"""16-bit PCM WAV files on any binary file object, and the streaming mixdown of a call's two legs.

Recordings are 16-bit PCM WAV (not mu-law WAV) because every player opens those. No I/O is
done here beyond reading and writing the file object handed in.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from voicefsm.core.audio import SAMPLE_RATE_HZ, ULAW_SILENCE, mix_to_pcm16, ulaw_decode
from voicefsm.errors import VoiceFsmError

SAMPLE_WIDTH_BYTES = 2


class WavFormatError(VoiceFsmError, ValueError):
    """A WAV file is not the 16-bit PCM voicefsm reads; ``found`` says what it is instead."""

    def __init__(self, found: str, source: str | None = None) -> None:
        super().__init__(found, source)
        self.found = found
        self.source = source

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        return (
            f"expected a 16-bit PCM WAV file but found {self.found}{where}; "
            "convert it first, e.g. `sox in.wav -b 16 -e signed-integer out.wav`"
        )


@dataclass(frozen=True, slots=True)
class WavAudio:
    """Decoded WAV contents: interleaved 16-bit little-endian PCM plus its format."""

    pcm16: bytes
    sample_rate_hz: int
    channels: int

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.pcm16) / (SAMPLE_WIDTH_BYTES * self.channels * self.sample_rate_hz)


def open_wav_writer(f: BinaryIO, sample_rate_hz: int = SAMPLE_RATE_HZ, channels: int = 1) -> wave.Wave_write:
    """A ``wave.Wave_write`` on ``f`` set up for 16-bit PCM; closing it does not close ``f``."""
    writer = wave.open(f, "wb")  # noqa: SIM115 - handed to the caller, who closes it
    writer.setnchannels(channels)
    writer.setsampwidth(SAMPLE_WIDTH_BYTES)
    writer.setframerate(sample_rate_hz)
    return writer


def write_wav(f: BinaryIO, pcm16: bytes, sample_rate_hz: int, channels: int = 1) -> None:
    """Write 16-bit PCM as a complete WAV file to ``f`` (works on unseekable streams too)."""
    frame_size = SAMPLE_WIDTH_BYTES * channels
    if len(pcm16) % frame_size:
        raise ValueError(
            f"write_wav got {len(pcm16)} bytes of PCM, not a whole number of {channels}-channel "
            f"16-bit sample frames ({frame_size} bytes each)"
        )
    writer = open_wav_writer(f, sample_rate_hz, channels)
    # Announcing the length up front means the header never has to be patched (no seek needed).
    writer.setnframes(len(pcm16) // frame_size)
    writer.writeframes(pcm16)
    writer.close()


def read_wav(f: BinaryIO) -> WavAudio:
    """Read a 16-bit PCM WAV file from ``f``; anything else raises :class:`WavFormatError`."""
    source = getattr(f, "name", None)
    source = source if isinstance(source, str) else None
    try:
        with wave.open(f, "rb") as reader:
            width = reader.getsampwidth()
            if width != SAMPLE_WIDTH_BYTES:
                raise WavFormatError(f"{8 * width}-bit samples", source)
            return WavAudio(
                pcm16=reader.readframes(reader.getnframes()),
                sample_rate_hz=reader.getframerate(),
                channels=reader.getnchannels(),
            )
    except wave.Error as exc:  # e.g. "unknown format: 7" for mu-law WAV, "file does not start with RIFF id"
        raise WavFormatError(f"a file the wave module rejects ({exc})", source) from exc
    except EOFError as exc:
        raise WavFormatError("a truncated or empty file", source) from exc


class PcmSink(Protocol):
    """Where a mixdown writes its PCM: a ``wave.Wave_write`` or anything with ``writeframes``."""

    def writeframes(self, data: bytes) -> None: ...


#: Agent silence under caller audio, sliced without copying (a frame of it per silent agent frame).
_SILENCE = memoryview(bytes([ULAW_SILENCE]) * 8000)


class CallMixdown:
    """Mixes a call's caller and agent mu-law audio onto one timeline and streams it out as 16-bit PCM.

    The caller leg is the clock: Twilio sends inbound frames continuously, 50 per second, even
    when the caller is silent, so each caller frame is written at once, mixed with as much
    queued agent audio as it is long. Agent audio is queued as it is tapped (usually a whole
    prompt in a burst, far faster than real time) and played out against the caller frames, as
    Twilio's own playback buffer does. Only the agent queue is held in memory; beyond
    ``max_agent_backlog_ms`` (or when the caller leg is missing altogether) the oldest agent
    audio is written alone, so memory stays bounded however long the call is.
    """

    def __init__(self, sink: PcmSink, *, max_agent_backlog_ms: int = 60_000, batch_bytes: int = 0) -> None:
        if max_agent_backlog_ms < 0:
            raise ValueError(f"max_agent_backlog_ms must be 0 or more, got {max_agent_backlog_ms}")
        self._sink = sink
        self._max_backlog = SAMPLE_RATE_HZ * max_agent_backlog_ms // 1000
        # Both legs, still mu-law, from the first sample not yet written, on one timeline: agent audio
        # starts where the caller leg is when it is tapped, or after the agent audio queued before it
        # (silence fills the gap). Mixing one 160-byte frame costs about as much as mixing fifty
        # (numpy's per-call overhead), so a live call mixes ``batch_bytes`` of caller audio at a
        # time; a frame costs two appends. 0 mixes every caller frame as it comes.
        self._caller = bytearray()
        self._agent = bytearray()
        self._batch_bytes = batch_bytes
        self.samples_written = 0

    @property
    def agent_backlog(self) -> int:
        """Agent samples waiting for caller audio to be mixed with."""
        return max(0, len(self._agent) - len(self._caller))

    @property
    def duration_s(self) -> float:
        """Seconds of mixed audio written so far."""
        return self.samples_written / SAMPLE_RATE_HZ

    def add_caller(self, frame: bytes) -> None:
        """Write one caller frame, mixed with the agent audio that plays over it."""
        if not frame:
            return
        self._caller += frame
        if len(self._caller) >= self._batch_bytes:
            self._mix()

    def add_agent(self, audio: bytes) -> None:
        """Queue agent audio (any length) to be played out against the caller's frames."""
        agent = self._agent
        gap = len(self._caller) - len(agent)
        if gap > 0:  # the agent was silent under the caller audio since its last audio
            agent += _SILENCE[:gap] if gap <= len(_SILENCE) else bytes([ULAW_SILENCE]) * gap
        agent += audio
        excess = len(agent) - len(self._caller) - self._max_backlog
        if excess > 0:
            self._write_agent_alone(excess)

    def clear_agent(self) -> int:
        """Drop queued agent audio (the caller's playback buffer was cleared); returns samples dropped."""
        dropped = self.agent_backlog
        del self._agent[len(self._caller) :]
        return dropped

    def flush(self) -> None:
        """Write the queued agent audio alone (the end of the call, or a call without a caller leg)."""
        self._write_agent_alone(self.agent_backlog)

    def _mix(self) -> None:
        """Write the caller audio held, mixed with the agent audio under it (silence where it has none)."""
        count = len(self._caller)
        if not count:
            return
        under = bytes(self._agent[:count])
        del self._agent[:count]
        self._write(mix_to_pcm16(bytes(self._caller), under))  # mix_to_pcm16 pads ``under`` with silence
        self._caller.clear()

    def _write_agent_alone(self, count: int) -> None:
        self._mix()  # what the caller leg already carried goes first
        if count <= 0:
            return
        head = bytes(self._agent[:count])
        del self._agent[:count]
        self._write(ulaw_decode(head))

    def _write(self, pcm16: bytes) -> None:
        self._sink.writeframes(pcm16)
        self.samples_written += len(pcm16) // SAMPLE_WIDTH_BYTES
