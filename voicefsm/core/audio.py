"""Telephone audio: G.711 mu-law, 20 ms framing, resampling and mixing. Pure functions, no I/O.

PCM here is always 16-bit signed little-endian mono ("s16le"); mu-law is one byte per sample.
Twilio Media Streams carry 8 kHz mu-law in 160-byte frames (20 ms).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE_HZ = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # one mu-law byte per sample
ULAW_SILENCE = 0xFF

_PCM16 = np.dtype("<i2")
_PCM16_BITS = np.dtype("<u2")


def _build_encode_table() -> np.ndarray:
    # Indexed by the int16 sample's bit pattern; bit-exact with audioop.lin2ulaw (it works on
    # 14 bits, hence the >> 2), which differs from Sun's g711.c on 381 inputs.
    v = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(v), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), magnitude)
    s7 = np.minimum(segment, 7)
    coded = ((s7 << 4) | ((magnitude >> (s7 + 1)) & 0xF)) ^ mask
    return np.where(segment >= 8, 0x7F ^ mask, coded).astype(np.uint8)


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int16) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(_PCM16)


_ENCODE = _build_encode_table()
_DECODE = _build_decode_table()
# Every pair of mu-law bytes (a << 8 | b) -> their clipped 16-bit sum: mixing is one table lookup.
_MIX: npt.NDArray[np.int16] = (
    np.clip(_DECODE.astype(np.int32)[:, None] + _DECODE.astype(np.int32)[None, :], -32768, 32767)
    .astype(_PCM16)
    .ravel()
)
_SILENCE_BYTE = bytes([ULAW_SILENCE])


def _samples(pcm16: bytes, what: str) -> np.ndarray:
    if len(pcm16) % 2:
        raise ValueError(
            f"{what} needs 16-bit PCM (2 bytes per sample) but got {len(pcm16)} bytes, an odd count; "
            "a chunk was split mid-sample: carry the last byte over to the next chunk"
        )
    return np.frombuffer(pcm16, dtype=_PCM16)


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode 16-bit PCM as G.711 mu-law (bit-exact with ``audioop.lin2ulaw(pcm16, 2)``)."""
    _samples(pcm16, "ulaw_encode")
    return _ENCODE[np.frombuffer(pcm16, dtype=_PCM16_BITS)].tobytes()


def ulaw_decode(ulaw: bytes) -> bytes:
    """Decode G.711 mu-law to 16-bit PCM (bit-exact with ``audioop.ulaw2lin(ulaw, 2)``)."""
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)].tobytes()


def silence(duration_ms: int) -> bytes:
    """``duration_ms`` of 8 kHz mu-law silence."""
    if duration_ms < 0:
        raise ValueError(f"silence() needs a duration of 0 ms or more, got {duration_ms} ms")
    return _SILENCE_BYTE * (SAMPLE_RATE_HZ * duration_ms // 1000)


class Framer:
    """Cuts a byte stream arriving in arbitrary chunks into fixed 20 ms mu-law frames."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"Framer needs a positive frame size, got {frame_bytes} bytes")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back until a frame is complete."""
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame it completes and keep the remainder for later."""
        whole = self.push_whole(data)
        return [whole[i : i + self.frame_bytes] for i in range(0, len(whole), self.frame_bytes)]

    def push_whole(self, data: bytes) -> bytes:
        """Add ``data``; return the frames it completes as one run of bytes, keep the remainder for later."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self.frame_bytes
        if not whole:
            return b""
        out = bytes(self._pending[:whole])
        del self._pending[:whole]
        return out

    def flush(self, pad: bool = True) -> bytes | None:
        """The last partial frame, padded with mu-law silence unless ``pad=False``; None if none is left."""
        if not self._pending:
            return None
        tail = bytes(self._pending)
        self._pending.clear()
        return tail.ljust(self.frame_bytes, _SILENCE_BYTE) if pad else tail


def frames(data: bytes, pad: bool = True) -> list[bytes]:
    """Split mu-law ``data`` into 160-byte frames; a partial last frame is padded unless ``pad=False``."""
    framer = Framer()
    out = framer.push(data)
    tail = framer.flush(pad=pad)
    if tail is not None:
        out.append(tail)
    return out


class Resampler:
    """Stateful sample-rate converter for a stream of 16-bit mono PCM chunks (soxr, HQ).

    Keep one per direction of one call: the filter carries state across chunks, so frame edges
    leave no artefacts. Output lags input by a few milliseconds; ``last=True`` drains it and
    resets the resampler for a fresh signal. Chunked output is identical to one-shot output.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} Hz -> {out_rate_hz} Hz")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream: soxr.ResampleStream | None = None
        if in_rate_hz != out_rate_hz:
            # float32 inside, rounded here: soxr's own int16 output is dithered, so not reproducible.
            self._stream = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32")

    def process(self, pcm16: bytes, last: bool = False) -> bytes:
        """Resample one chunk; with ``last=True`` also return the samples still inside the filter."""
        samples = _samples(pcm16, "Resampler.process")
        if self._stream is None:
            return bytes(pcm16)
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(samples.astype(np.float32), last=last)
        if last:
            self._stream.clear()  # soxr refuses input after last=True; start over for the next signal
        return np.clip(np.rint(out), -32768, 32767).astype(_PCM16).tobytes()


def resample(pcm16: bytes, in_rate_hz: int, out_rate_hz: int) -> bytes:
    """Resample a whole 16-bit mono PCM clip in one go (soxr, HQ)."""
    return Resampler(in_rate_hz, out_rate_hz).process(pcm16, last=True)


def mix_to_pcm16(a: bytes, b: bytes) -> bytes:
    """Mix two mu-law buffers into 16-bit PCM; the shorter one is padded with silence, the sum clipped."""
    if len(a) != len(b):
        width = max(len(a), len(b))
        a, b = a.ljust(width, _SILENCE_BYTE), b.ljust(width, _SILENCE_BYTE)
    pair = (np.frombuffer(a, dtype=np.uint8).astype(np.uint16) << 8) | np.frombuffer(b, dtype=np.uint8)
    mixed: npt.NDArray[np.int16] = _MIX[pair]
    return mixed.tobytes()


def mix_frames(a: bytes, b: bytes) -> bytes:
    """Mix two mu-law frames into one mu-law frame (decode, sum, clip to 16 bits, encode)."""
    return ulaw_encode(mix_to_pcm16(a, b))
