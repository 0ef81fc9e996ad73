"""mu-law codec (against stdlib audioop), framing, resampling and mixing."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicefsm.core.audio import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE_HZ,
    ULAW_SILENCE,
    Framer,
    Resampler,
    frames,
    mix_frames,
    mix_to_pcm16,
    resample,
    silence,
    ulaw_decode,
    ulaw_encode,
)


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def samples_of(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return pcm(np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)))


def dominant_hz(pcm16: bytes, rate_hz: int) -> float:
    x = samples_of(pcm16)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate_hz)[np.argmax(spectrum)])


def rms(pcm16: bytes) -> float:
    return float(np.sqrt(np.mean(samples_of(pcm16) ** 2)))


# -- codec --------------------------------------------------------------------------------


def stdlib_audioop() -> ModuleType:
    """The reference codec: audioop is in the 3.11/3.12 stdlib (deprecated, gone in 3.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # Python 3.13+ without the audioop-lts backport
            pytest.skip("audioop is not available on this Python")
    return audioop


def test_constants_describe_twilio_frames() -> None:
    assert (SAMPLE_RATE_HZ, FRAME_MS, FRAME_BYTES, ULAW_SILENCE) == (8000, 20, 160, 0xFF)


def test_encode_matches_audioop_on_every_int16() -> None:
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert ulaw_encode(every_sample) == stdlib_audioop().lin2ulaw(every_sample, 2)


def test_decode_matches_audioop_on_every_byte() -> None:
    every_byte = bytes(range(256))
    assert ulaw_decode(every_byte) == stdlib_audioop().ulaw2lin(every_byte, 2)


def test_codec_handles_empty_input() -> None:
    assert ulaw_encode(b"") == b""
    assert ulaw_decode(b"") == b""


def test_encode_rejects_a_split_sample() -> None:
    with pytest.raises(ValueError, match="odd count"):
        ulaw_encode(b"\x00\x01\x02")


def test_silence_is_mu_law_silence_and_decodes_to_zero() -> None:
    assert silence(20) == bytes([0xFF]) * FRAME_BYTES
    assert silence(0) == b""
    assert set(ulaw_decode(silence(100))) == {0}
    with pytest.raises(ValueError, match="-5 ms"):
        silence(-5)


# -- framing ------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=500), max_size=20))
def test_framer_push_whole_yields_the_stream_in_runs_of_whole_frames(chunks: list[bytes]) -> None:
    framer = Framer()
    runs = [framer.push_whole(chunk) for chunk in chunks]
    data = b"".join(chunks)
    assert all(len(run) % FRAME_BYTES == 0 for run in runs)
    assert b"".join(runs) == data[: len(data) - len(data) % FRAME_BYTES]
    assert framer.pending == len(data) % FRAME_BYTES


@given(st.lists(st.binary(max_size=500), max_size=20))
def test_framer_yields_the_stream_in_whole_frames_whatever_the_chunking(chunks: list[bytes]) -> None:
    framer = Framer()
    out = [frame for chunk in chunks for frame in framer.push(chunk)]
    data = b"".join(chunks)
    assert all(len(frame) == FRAME_BYTES for frame in out)
    assert b"".join(out) == data[: len(out) * FRAME_BYTES]
    assert framer.pending == len(data) % FRAME_BYTES
    tail = framer.flush()
    if len(data) % FRAME_BYTES:
        assert tail == data[len(out) * FRAME_BYTES :].ljust(FRAME_BYTES, b"\xff")
    else:
        assert tail is None
    assert framer.pending == 0
    assert framer.flush() is None


@given(st.binary(max_size=1000))
def test_frames_splits_and_pads(data: bytes) -> None:
    out = frames(data)
    assert all(len(frame) == FRAME_BYTES for frame in out)
    assert len(out) == -(-len(data) // FRAME_BYTES)
    assert b"".join(out).rstrip(b"\xff") == data.rstrip(b"\xff")
    assert b"".join(frames(data, pad=False)) == data


def test_flush_without_padding_returns_the_raw_tail() -> None:
    framer = Framer()
    assert framer.push(b"\x01" * 170) == [b"\x01" * 160]
    assert framer.flush(pad=False) == b"\x01" * 10


# -- resampling ---------------------------------------------------------------------------


def test_one_shot_resample_keeps_a_tone_through_8k_16k_8k() -> None:
    original = tone(440, 8000, 1.0)
    up = resample(original, 8000, 16000)
    down = resample(up, 16000, 8000)
    assert len(up) == 2 * len(original)
    assert len(down) == len(original)
    assert dominant_hz(up, 16000) == pytest.approx(440, abs=2)
    assert dominant_hz(down, 8000) == pytest.approx(440, abs=2)
    assert rms(down) == pytest.approx(rms(original), rel=0.02)
    # The filter's edges aside, the round trip reproduces the signal closely.
    middle = slice(200, -200)
    error = samples_of(down)[middle] - samples_of(original)[middle]
    assert np.max(np.abs(error)) < 0.01 * 8000


def test_stream_resampler_over_20ms_frames_matches_one_shot() -> None:
    original = tone(440, 8000, 1.0)
    up = Resampler(8000, 16000)
    chunks = [up.process(frame) for frame in (original[i : i + 320] for i in range(0, len(original), 320))]
    chunks.append(up.process(b"", last=True))
    streamed = b"".join(chunks)
    assert len(streamed) == 2 * len(original)
    assert streamed == resample(original, 8000, 16000)


def test_stream_resampler_can_be_reused_after_last() -> None:
    resampler = Resampler(16000, 8000)
    clip = tone(300, 16000, 0.2)
    first = resampler.process(clip, last=True)
    second = resampler.process(clip, last=True)
    assert first == second
    assert len(first) == len(clip) // 2


def test_downsampling_removes_a_tone_above_the_new_nyquist() -> None:
    # 5 kHz cannot exist at 8 kHz: it must be filtered out, not folded back to 3 kHz.
    down = resample(tone(5000, 16000, 0.5), 16000, 8000)
    assert rms(down[400:-400]) < 10


def test_resample_length_ratios() -> None:
    clip = tone(440, 24000, 0.3)
    assert len(resample(clip, 24000, 8000)) == len(clip) // 3
    assert len(resample(tone(440, 22050, 1.0), 22050, 8000)) == 2 * 8000
    assert resample(clip, 24000, 24000) == clip
    assert resample(b"", 8000, 16000) == b""


def test_resampler_rejects_bad_rates_and_split_samples() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="odd count"):
        Resampler(8000, 16000).process(b"\x00")


# -- mixing -------------------------------------------------------------------------------


def test_mixing_with_silence_leaves_a_frame_unchanged() -> None:
    frame = ulaw_encode(tone(440, 8000, 0.02))
    assert mix_frames(frame, silence(20)) == frame
    assert mix_frames(silence(20), frame) == frame
    assert mix_to_pcm16(frame, silence(20)) == ulaw_decode(frame)


def test_mixing_adds_the_two_signals() -> None:
    a = ulaw_encode(tone(440, 8000, 0.02, amplitude=3000))
    b = ulaw_encode(tone(1000, 8000, 0.02, amplitude=3000))
    mixed = samples_of(ulaw_decode(mix_frames(a, b)))
    expected = samples_of(ulaw_decode(a)) + samples_of(ulaw_decode(b))
    # Re-encoding to mu-law costs at most one quantisation step (~3 % of the value here).
    assert np.max(np.abs(mixed - expected)) <= 0.04 * np.max(np.abs(expected))


def test_mixing_clips_instead_of_wrapping_around() -> None:
    loud = ulaw_encode(pcm(np.array([30000, -30000] * 80)))
    mixed = samples_of(mix_to_pcm16(loud, loud))
    assert mixed.max() == 32767
    assert mixed.min() == -32768


def test_mixing_unequal_lengths_pads_the_shorter_with_silence() -> None:
    long = ulaw_encode(tone(440, 8000, 0.02))
    short = long[:50]
    mixed = mix_to_pcm16(short, long)
    assert len(mixed) == 2 * len(long)
    assert mixed[100:] == ulaw_decode(long)[100:]
    assert mix_frames(long, b"") == long


def test_resampling_overshoot_clips_instead_of_wrapping_around() -> None:
    # A full-scale square wave rings past full scale after filtering (Gibbs); it must saturate.
    square = pcm(np.where(np.arange(800) % 40 < 20, 32767, -32768))
    up = samples_of(resample(square, 8000, 16000))
    plateaus = np.arange(len(up)) % 80
    assert up.max() == 32767
    assert up.min() == -32768
    assert np.all(up[(plateaus > 10) & (plateaus < 30)] > 20000)


@given(st.binary(max_size=400), st.binary(max_size=400))
def test_mixing_is_the_clipped_sum_of_the_decoded_signals(a: bytes, b: bytes) -> None:
    width = max(len(a), len(b))
    left = np.zeros(width)
    right = np.zeros(width)
    left[: len(a)] = samples_of(ulaw_decode(a))
    right[: len(b)] = samples_of(ulaw_decode(b))
    expected = np.clip(left + right, -32768, 32767)
    assert np.array_equal(samples_of(mix_to_pcm16(a, b)), expected)
    assert mix_frames(a, b) == ulaw_encode(pcm(expected))
