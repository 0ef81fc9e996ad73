"""PCM WAV reading/writing and the streaming two-leg call mixdown."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicefsm.core.audio import FRAME_BYTES, silence, ulaw_decode, ulaw_encode
from voicefsm.core.wav import CallMixdown, WavAudio, WavFormatError, open_wav_writer, read_wav, write_wav


def tone_ulaw(freq_hz: float, frames: int, amplitude: float = 6000.0) -> bytes:
    t = np.arange(frames * FRAME_BYTES) / 8000
    return ulaw_encode(np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes())


def split(ulaw: bytes) -> list[bytes]:
    return [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]


class Unseekable(io.RawIOBase):
    """A write-only pipe-like stream: tell/seek fail, as on stdout or a socket."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


class ListSink:
    """Collects what a mixdown writes, one entry per writeframes call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writeframes(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    @property
    def pcm(self) -> bytes:
        return b"".join(self.writes)


# -- WAV files ----------------------------------------------------------------------------


whole_stereo_frames = st.binary(max_size=4000).map(lambda b: b[: len(b) - len(b) % 4])


@given(whole_stereo_frames, st.sampled_from([8000, 16000, 22050]), st.sampled_from([1, 2]))
def test_wav_round_trip(pcm16: bytes, rate: int, channels: int) -> None:
    f = io.BytesIO()
    write_wav(f, pcm16, rate, channels)
    f.seek(0)
    assert read_wav(f) == WavAudio(pcm16, rate, channels)


def test_written_wav_is_standard_16bit_pcm() -> None:
    f = io.BytesIO()
    write_wav(f, b"\x01\x00" * 8000, 8000)
    f.seek(0)
    with wave.open(f, "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert reader.getnframes() == 8000
    assert f.getvalue()[:4] == b"RIFF"


def test_write_wav_works_on_an_unseekable_stream() -> None:
    out = Unseekable()
    write_wav(out, b"\x00\x10" * 100, 8000)  # type: ignore[arg-type]
    audio = read_wav(io.BytesIO(bytes(out.data)))
    assert audio.pcm16 == b"\x00\x10" * 100
    assert audio.duration_s == pytest.approx(100 / 8000)


def test_write_wav_rejects_a_partial_sample_frame() -> None:
    with pytest.raises(ValueError, match="whole number"):
        write_wav(io.BytesIO(), b"\x00\x00\x00", 8000, channels=2)


def test_read_wav_rejects_8bit_pcm_naming_what_it_found() -> None:
    f = io.BytesIO()
    with wave.open(f, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(b"\x80" * 100)
    f.seek(0)
    with pytest.raises(WavFormatError, match="found 8-bit samples") as caught:
        read_wav(f)
    assert caught.value.found == "8-bit samples"


def test_read_wav_rejects_mu_law_wav() -> None:
    data = silence(20)
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)  # WAVE_FORMAT_MULAW
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    riff = b"WAVE" + chunks
    with pytest.raises(WavFormatError, match="unknown format: 7"):
        read_wav(io.BytesIO(b"RIFF" + struct.pack("<I", len(riff)) + riff))


def test_read_wav_rejects_files_that_are_not_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not audio")
    with path.open("rb") as f, pytest.raises(WavFormatError, match=r"RIFF.*notes\.txt"):
        read_wav(f)
    with pytest.raises(WavFormatError, match="truncated or empty"):
        read_wav(io.BytesIO(b""))


# -- call mixdown -------------------------------------------------------------------------


def test_caller_frames_are_written_as_they_arrive() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink)
    caller = split(tone_ulaw(300, 5))
    for count, frame in enumerate(caller, start=1):
        mixdown.add_caller(frame)
        assert len(sink.writes) == count
    assert sink.pcm == ulaw_decode(b"".join(caller))
    assert mixdown.duration_s == pytest.approx(0.1)


def test_agent_burst_is_played_out_against_the_caller_clock() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink)
    agent = split(tone_ulaw(1000, 3))
    caller = split(tone_ulaw(300, 5))
    for frame in agent:  # a prompt arrives in one burst, faster than real time
        mixdown.add_agent(frame)
    assert sink.writes == []
    for frame in caller:
        mixdown.add_caller(frame)
    mixdown.flush()
    assert len(sink.pcm) == 2 * 5 * FRAME_BYTES  # the prompt overlaps the caller; nothing is appended
    mixed = np.frombuffer(sink.pcm, "<i2").astype(int)
    expected = np.frombuffer(ulaw_decode(b"".join(caller)), "<i2").astype(int)
    expected[: 3 * FRAME_BYTES] += np.frombuffer(ulaw_decode(b"".join(agent)), "<i2")
    assert np.array_equal(mixed, expected)


def test_agent_without_a_caller_leg_is_written_on_flush() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink)
    agent = tone_ulaw(1000, 4)
    for frame in split(agent):
        mixdown.add_agent(frame)
    assert mixdown.agent_backlog == 4 * FRAME_BYTES
    mixdown.flush()
    assert sink.pcm == ulaw_decode(agent)
    assert mixdown.agent_backlog == 0


def test_agent_backlog_is_bounded() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink, max_agent_backlog_ms=200)  # 10 frames
    agent = tone_ulaw(1000, 25)
    for frame in split(agent):
        mixdown.add_agent(frame)
        assert mixdown.agent_backlog <= 10 * FRAME_BYTES
    assert sink.pcm == ulaw_decode(agent[: 15 * FRAME_BYTES])  # the oldest went out alone, in order
    mixdown.flush()
    assert sink.pcm == ulaw_decode(agent)


def test_clear_agent_drops_audio_that_was_never_played() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink)
    for frame in split(tone_ulaw(1000, 10)):
        mixdown.add_agent(frame)
    mixdown.add_caller(silence(20))
    assert mixdown.clear_agent() == 9 * FRAME_BYTES
    mixdown.add_caller(silence(20))
    mixdown.flush()
    assert len(sink.pcm) == 2 * 2 * FRAME_BYTES
    assert set(sink.pcm[2 * FRAME_BYTES :]) == {0}


def test_caller_frames_of_odd_sizes_consume_matching_agent_audio() -> None:
    sink = ListSink()
    mixdown = CallMixdown(sink)
    mixdown.add_agent(silence(20))
    mixdown.add_caller(silence(5))  # 40 samples
    assert mixdown.agent_backlog == FRAME_BYTES - 40
    mixdown.add_caller(b"")
    assert len(sink.writes) == 1


def test_mixdown_streams_into_a_wave_writer() -> None:
    f = io.BytesIO()
    writer = open_wav_writer(f)
    mixdown = CallMixdown(writer)
    for frame in split(tone_ulaw(300, 50)):
        mixdown.add_caller(frame)
    for frame in split(tone_ulaw(1000, 20)):
        mixdown.add_agent(frame)
    mixdown.flush()
    writer.close()
    f.seek(0)
    audio = read_wav(f)
    assert (audio.sample_rate_hz, audio.channels) == (8000, 1)
    assert audio.duration_s == pytest.approx(1.4)  # 1 s of caller, then the 0.4 s prompt alone


def test_mixing_in_batches_writes_the_same_audio_as_frame_by_frame() -> None:
    rng = np.random.default_rng(7)
    steps = [("agent", rng.integers(0, 256, 160 * int(n), dtype=np.uint8).tobytes()) for n in (3, 1, 7)]
    steps += [("caller", rng.integers(0, 256, 160, dtype=np.uint8).tobytes()) for _ in range(23)]
    order = rng.permutation(len(steps))
    outputs = []
    for batch_bytes in (0, 1600, 8000):
        sink = ListSink()
        mixdown = CallMixdown(sink, batch_bytes=batch_bytes)
        for index in order:
            leg, audio = steps[index]
            mixdown.add_caller(audio) if leg == "caller" else mixdown.add_agent(audio)
            if index == 5:
                mixdown.clear_agent()
        mixdown.flush()
        outputs.append((sink.pcm, mixdown.duration_s))
    assert outputs[0] == outputs[1]
