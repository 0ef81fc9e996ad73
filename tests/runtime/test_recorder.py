"""AudioMixer: streamed call recording and the optional ffplay live monitor."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voicefsm.core.audio import FRAME_BYTES, frames, ulaw_encode
from voicefsm.core.wav import read_wav
from voicefsm.runtime import recorder
from voicefsm.runtime.recorder import FFPLAY_ARGS, AudioMixer

NO_FFPLAY_WARNING = "live monitoring needs ffplay (apt-get install ffmpeg); recording continues"


def tone_frames(freq_hz: float, seconds: float, amplitude: float = 4000.0) -> list[bytes]:
    t = np.arange(int(8000 * seconds)) / 8000
    return frames(ulaw_encode(np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()))


def feed_fake_call(mixer: AudioMixer) -> None:
    """2 s of caller audio (300 Hz); at 0.4 s the agent queues a 1 s prompt (1000 Hz) in one burst."""
    prompt = tone_frames(1000, 1.0)
    for index, frame in enumerate(tone_frames(300, 2.0)):
        if index == 20:
            for agent_frame in prompt:
                mixer.tap_agent(agent_frame)
        mixer.tap_caller(frame)


def band_rms(pcm16: bytes, freq_hz: float) -> float:
    """RMS of the part of the signal near ``freq_hz`` (a crude FFT band-pass)."""
    x = np.frombuffer(pcm16, "<i2").astype(np.float64)
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    spectrum[np.abs(freqs - freq_hz) > 50] = 0
    return float(np.sqrt(np.mean(np.fft.irfft(spectrum, len(x)) ** 2)))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for something another process or thread does; fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        # Polling: the condition is a file another process or a worker thread writes; no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fake_ffplay(tmp_path: Path, body: str) -> Path:
    """An executable named ffplay that records its arguments and pid, then runs ``body``."""
    script = tmp_path / "bin" / "ffplay"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys, time\n"
        f"out = pathlib.Path({str(tmp_path)!r})\n"
        "(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "(out / 'pid').write_text(str(os.getpid()))\n" + body
    )
    script.chmod(0o755)
    return script


LISTENING_PLAYER = """
with open(out / 'heard.raw', 'wb') as heard:
    while chunk := sys.stdin.buffer.read1(65536):
        heard.write(chunk)
        heard.flush()
"""


def warnings_from_recorder(caplog: pytest.LogCaptureFixture) -> list[str]:
    mine = (r for r in caplog.records if r.name == recorder.__name__)
    return [r.getMessage() for r in mine if r.levelno >= logging.WARNING]


# -- recording ----------------------------------------------------------------------------


async def test_records_both_legs_of_a_call_to_a_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "call_001.wav"  # the folder is created on start
    mixer = AudioMixer(record_path=path)
    await mixer.start()
    feed_fake_call(mixer)
    await mixer.stop()

    with path.open("rb") as f:
        audio = read_wav(f)
    assert (audio.sample_rate_hz, audio.channels) == (8000, 1)
    assert audio.duration_s == pytest.approx(2.0)  # the prompt overlaps the caller on one timeline
    assert mixer.duration_s == pytest.approx(2.0)
    before, during = audio.pcm16[: 2 * 3200], audio.pcm16[2 * 3200 : 2 * 11200]
    assert band_rms(before, 300) > 2000
    assert band_rms(before, 1000) < 100
    assert band_rms(during, 300) > 2000
    assert band_rms(during, 1000) > 2000


async def test_recording_is_streamed_to_disk_during_the_call(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path)
    await mixer.start()
    try:
        for frame in tone_frames(300, 1.0):
            mixer.tap_caller(frame)
        await until(lambda: size_of(path) >= 44 + 8000)  # WAV header + at least 0.5 s of audio
        with path.open("rb") as f:
            assert read_wav(f).duration_s >= 0.5  # the header is kept valid mid-call
    finally:
        await mixer.stop()
    with path.open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(1.0)


async def test_stop_is_idempotent_and_later_taps_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path)
    await mixer.start()
    mixer.tap_caller(b"\x00" * FRAME_BYTES)
    await mixer.stop()
    await mixer.stop()
    mixer.tap_caller(b"\x00" * FRAME_BYTES)
    mixer.tap_agent(b"\x00" * FRAME_BYTES)
    with path.open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(0.02)
    with pytest.raises(RuntimeError, match="new mixer for each call"):
        await mixer.start()


async def test_stop_without_start_does_nothing(tmp_path: Path) -> None:
    mixer = AudioMixer(record_path=tmp_path / "never.wav")
    await mixer.stop()
    assert not (tmp_path / "never.wav").exists()


async def test_barge_in_clear_drops_the_unplayed_prompt(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path)
    await mixer.start()
    for frame in tone_frames(1000, 1.0):
        mixer.tap_agent(frame)
    for index, frame in enumerate(tone_frames(300, 1.0)):
        if index == 10:
            mixer.clear_agent()
        mixer.tap_caller(frame)
    await mixer.stop()
    with path.open("rb") as f:
        audio = read_wav(f)
    assert audio.duration_s == pytest.approx(1.0)
    assert band_rms(audio.pcm16[: 2 * 1600], 1000) > 2000
    assert band_rms(audio.pcm16[2 * 1600 :], 1000) < 100


async def test_an_unwritable_path_costs_the_recording_not_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    mixer = AudioMixer(record_path=tmp_path / "taken" / "call.wav")
    await mixer.start()  # the file opens on the disk thread, so start() does not fail
    mixer.tap_caller(b"\x00" * FRAME_BYTES)
    await mixer.stop()
    assert mixer.record_dropped_bytes == 0
    assert "could not open the recording" in caplog.text and "the call goes on unrecorded" in caplog.text


async def test_the_file_opens_with_the_first_batch_of_writes_and_keeps_what_came_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path)
    await mixer.start()
    assert not path.exists()  # not opened in start(): with the next hand-off to the disk thread
    for frame in tone_frames(300, 0.6):
        mixer.tap_caller(frame)
    await mixer.stop()
    with path.open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(0.6)


# -- live monitor -------------------------------------------------------------------------


async def test_missing_ffplay_warns_once_and_recording_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recorder.shutil, "which", lambda name: None)
    caplog.set_level(logging.WARNING, logger=recorder.__name__)
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path, monitor=True)
    await mixer.start()
    feed_fake_call(mixer)
    await mixer.stop()

    assert warnings_from_recorder(caplog) == [NO_FFPLAY_WARNING]
    assert not mixer.monitoring
    assert mixer.player is None
    with path.open("rb") as f:
        audio = read_wav(f)
    assert audio.duration_s == pytest.approx(2.0)
    assert band_rms(audio.pcm16, 300) > 2000


async def test_monitor_pipes_the_mix_to_ffplay_and_reaps_it_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    player = fake_ffplay(tmp_path, LISTENING_PLAYER)
    monkeypatch.setattr(recorder.shutil, "which", lambda name: str(player) if name == "ffplay" else None)
    heard = tmp_path / "heard.raw"
    mixer = AudioMixer(monitor=True)
    await mixer.start()
    assert mixer.monitoring
    feed_fake_call(mixer)
    await until(lambda: size_of(heard) == 2 * 16000)  # 2 s of s16le at 8 kHz
    await mixer.stop()
    await mixer.stop()

    assert json.loads((tmp_path / "argv.json").read_text()) == list(FFPLAY_ARGS)
    assert " ".join(FFPLAY_ARGS) == "-f s16le -ar 8000 -ac 1 -nodisp -autoexit -loglevel quiet -"
    assert band_rms(heard.read_bytes(), 1000) > 1000
    assert mixer.player is not None
    assert mixer.player.returncode is not None
    assert not mixer.monitoring
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(int((tmp_path / "pid").read_text()), 0)
    assert warnings_from_recorder(caplog) == []


async def test_ffplay_that_dies_costs_one_warning_not_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    player = fake_ffplay(tmp_path, "sys.exit(3)\n")
    monkeypatch.setattr(recorder.shutil, "which", lambda name: str(player))
    caplog.set_level(logging.WARNING, logger=recorder.__name__)
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path, monitor=True)
    await mixer.start()
    assert mixer.player is not None
    async with asyncio.timeout(5):
        await mixer.player.wait()
    feed_fake_call(mixer)
    await mixer.stop()

    assert warnings_from_recorder(caplog) == [
        "ffplay exited (status 3); live monitoring stopped, recording continues"
    ]
    with path.open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(2.0)


async def test_a_stalled_monitor_drops_audio_but_not_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    player = fake_ffplay(tmp_path, "time.sleep(60)\n")  # never reads its stdin
    monkeypatch.setattr(recorder.shutil, "which", lambda name: str(player))
    path = tmp_path / "call.wav"
    mixer = AudioMixer(record_path=path, monitor=True)
    await mixer.start()
    for frame in tone_frames(300, 10.0):  # 160 kB of PCM: more than the pipe plus 1 s of slack
        mixer.tap_caller(frame)
    assert mixer.monitor_dropped_frames > 0
    assert mixer.monitoring
    await mixer.stop()

    assert mixer.player is not None
    assert mixer.player.returncode is not None
    with path.open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(10.0)


@pytest.mark.skipif(shutil.which("ffplay") is None, reason="ffplay is not installed (apt-get install ffmpeg)")
async def test_real_ffplay_is_started_and_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")  # no sound card needed on CI
    mixer = AudioMixer(record_path=tmp_path / "call.wav", monitor=True)
    await mixer.start()
    assert mixer.monitoring
    assert mixer.player is not None
    feed_fake_call(mixer)
    await mixer.stop()
    assert mixer.player.returncode is not None
    with (tmp_path / "call.wav").open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(2.0)


# -- disk writes, handed to the worker thread together ---------------------------------------


async def test_the_writes_of_many_recordings_share_one_hand_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    hand_offs = 0
    real_run_in_executor = loop.run_in_executor

    def counting(executor: object, func: Callable[..., object], *args: object) -> asyncio.Future[object]:
        nonlocal hand_offs
        hand_offs += func is recorder._run_writes
        return real_run_in_executor(executor, func, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "run_in_executor", counting)
    mixers = [AudioMixer(record_path=tmp_path / f"call{index}.wav") for index in range(5)]
    for mixer in mixers:
        await mixer.start()
    for frame in tone_frames(300, 1.2):  # each recording has a mixed second (a batch) due at once
        for mixer in mixers:
            mixer.tap_caller(frame)
    await until(lambda: all(size_of(tmp_path / f"call{index}.wav") >= 44 + 8000 for index in range(5)))
    assert hand_offs == 2  # the five files opened in one hand-off, their first batches written in one more
    for mixer in mixers:
        await mixer.stop()
    assert recorder._disk_writes is None  # nothing left to write: the module lets this loop go
    for index in range(5):
        with (tmp_path / f"call{index}.wav").open("rb") as f:
            assert read_wav(f).duration_s == pytest.approx(1.2)


async def test_a_failing_write_ends_only_its_own_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = AudioMixer(record_path=tmp_path / "broken.wav")
    healthy = AudioMixer(record_path=tmp_path / "ok.wav")
    await broken.start()
    await healthy.start()
    await until(lambda: broken._wav is not None and healthy._wav is not None)  # opened on the disk thread
    assert broken._wav is not None

    def disk_full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    broken._wav.writeframes = disk_full  # type: ignore[method-assign]
    for frame in tone_frames(300, 1.2):
        broken.tap_caller(frame)
        healthy.tap_caller(frame)
    await broken.stop()
    await healthy.stop()
    assert "the rest of the call is not recorded" in caplog.text
    with (tmp_path / "ok.wav").open("rb") as f:
        assert read_wav(f).duration_s == pytest.approx(1.2)
