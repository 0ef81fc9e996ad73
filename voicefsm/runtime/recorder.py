"""Record a whole call (caller + agent) to a WAV file and optionally play it live through ffplay.

The taps run on the call's hot path, so they only mix bytes in memory and hand them on: disk
writes happen in batches on a worker thread, owned by a writer task, and the live monitor
gets non-blocking pipe writes that are dropped (and counted) when ffplay falls behind. A
missing or crashing ffplay costs a single warning, never the call or the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import shutil
import wave
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from voicefsm.core.audio import SAMPLE_RATE_HZ
from voicefsm.core.wav import CallMixdown, open_wav_writer

log = logging.getLogger(__name__)

FFPLAY_ARGS = (
    *("-f", "s16le", "-ar", str(SAMPLE_RATE_HZ), "-ac", "1"),
    *("-nodisp", "-autoexit", "-loglevel", "quiet", "-"),
)
#: Caller audio is mixed with the agent audio under it a second at a time (8000 mu-law bytes): a mix
#: costs numpy's per-call overhead whatever its length, and a recording need not be written sooner.
MIX_BATCH_BYTES = 8000
#: Live monitoring (ffplay) mixes 200 ms at a time, so what one hears lags the call by no more.
MONITOR_MIX_BATCH_BYTES = 10 * 160
#: Mixed PCM goes to disk once half a second of it waits (16-bit, 8 kHz; a second's mix brings two).
RECORD_BATCH_BYTES = SAMPLE_RATE_HZ  # 2 bytes x 8000 samples/s x 0.5 s
#: Every recording's batches that are due within this long go to the worker thread in one hand-off.
DISK_COALESCE_S = 0.2
#: A disk 30 s behind is stuck: newer audio is dropped (and counted) rather than held in memory.
RECORD_BUFFER_MAX_BYTES = 60 * SAMPLE_RATE_HZ
#: Audio queued for ffplay beyond the pipe's own buffer (~4 s); past it, monitor chunks are dropped.
MONITOR_BUFFER_MAX_BYTES = 2 * SAMPLE_RATE_HZ  # 1 s
FFPLAY_EXIT_TIMEOUT_S = 2.0


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class _DiskWrites:
    """The recordings' disk writes on one event loop, handed to the worker thread together.

    One hand-off per recording and half second (``asyncio.to_thread``) cost about 0.1 ms of CPU
    each (a thread wake-up, the GIL passed back and forth, the loop woken): at 150 calls that was
    300 a second. Writes due within :data:`DISK_COALESCE_S` of the first go in one hand-off, in
    the order they came; each write's future settles with its own result, so one failing file
    fails only its own recording. A recording awaits each write before its next, and its file is
    closed only after its last, as before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: list[tuple[Callable[[bytes], object], bytes, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, write: Callable[[bytes], object], data: bytes) -> asyncio.Future[None]:
        """Have ``write(data)`` run on the worker thread soon; the future settles when it has."""
        done: asyncio.Future[None] = self.loop.create_future()
        self._due.append((write, data, done))
        if self._timer is None:
            self._timer = self.loop.call_later(DISK_COALESCE_S, self._hand_off)
        return done

    def _hand_off(self) -> None:
        self._timer = None
        due, self._due = self._due, []
        try:
            ran = self.loop.run_in_executor(None, _run_writes, [(write, data) for write, data, _ in due])
        except RuntimeError as exc:  # the executor is shut down: the loop is closing
            for _, _, done in due:
                if not done.done():
                    done.set_exception(exc)
            self._release()
            return
        ran.add_done_callback(lambda ran: self._written(due, ran))

    def _written(
        self,
        due: list[tuple[Callable[[bytes], object], bytes, asyncio.Future[None]]],
        ran: asyncio.Future[list[Exception | None]],
    ) -> None:
        _settle(due, ran)
        self._release()

    def _release(self) -> None:
        """With nothing more to write, let the loop go: a finished loop, and all it still refers to,
        must not live on in this module (the next write makes a new one)."""
        global _disk_writes
        if not self._due and _disk_writes is self:
            _disk_writes = None


def _run_writes(writes: list[tuple[Callable[[bytes], object], bytes]]) -> list[Exception | None]:
    """On the worker thread: every write, in order; what each raised (an OSError fails only its own)."""
    outcomes: list[Exception | None] = []
    for write, data in writes:
        try:
            write(data)
        except Exception as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


def _settle(
    due: list[tuple[Callable[[bytes], object], bytes, asyncio.Future[None]]],
    ran: asyncio.Future[list[Exception | None]],
) -> None:
    """Settle each write's future with what its write did (or what became of the whole hand-off)."""
    failure = None if ran.cancelled() else ran.exception()
    outcomes = ran.result() if not ran.cancelled() and failure is None else [failure] * len(due)
    for (_, _, done), outcome in zip(due, outcomes, strict=True):
        if done.done():  # its recording's writer was cancelled meanwhile
            continue
        if ran.cancelled():
            done.cancel()
        elif outcome is None:
            done.set_result(None)
        else:
            done.set_exception(outcome)


_disk_writes: _DiskWrites | None = None


def disk_writes() -> _DiskWrites:
    """The running loop's :class:`_DiskWrites` (a loop that has gone keeps its own until it is done)."""
    global _disk_writes
    loop = asyncio.get_running_loop()
    writes = _disk_writes
    if writes is None or writes.loop is not loop:
        writes = _disk_writes = _DiskWrites(loop)
    return writes


class _MixedAudio:
    """The mixdown's sink: hands each mixed PCM chunk to a callback."""

    def __init__(self, on_pcm: Callable[[bytes], None]) -> None:
        self.writeframes = on_pcm


class AudioMixer:
    """Records both legs of one call to a 16-bit 8 kHz mono WAV file and/or plays them live via ffplay.

    ``start()`` starts the writer (which opens the file with its first batch of writes) and ffplay,
    ``tap_caller``/``tap_agent`` feed it from the hot path, ``stop()`` flushes, closes the file and
    reaps ffplay. One mixer serves one call. Audio tapped before the file is open is kept (bounded)
    and written once it is; a file that cannot be opened is logged and the call goes on unrecorded.
    """

    def __init__(
        self, record_path: Path | None = None, monitor: bool = False, *, max_agent_backlog_ms: int = 60_000
    ) -> None:
        self.record_path = record_path
        self.monitor = monitor
        #: Mixed PCM bytes lost because the disk fell more than 30 s behind.
        self.record_dropped_bytes = 0
        #: Mixed chunks (about one per caller frame) not sent to ffplay because it fell behind.
        self.monitor_dropped_frames = 0
        #: The ffplay process, once started; kept after stop() so its exit status can be read.
        self.player: asyncio.subprocess.Process | None = None
        self._mixdown = CallMixdown(
            _MixedAudio(self._on_mixed),
            max_agent_backlog_ms=max_agent_backlog_ms,
            batch_bytes=MONITOR_MIX_BATCH_BYTES if monitor else MIX_BATCH_BYTES,
        )
        self._state = _State.NEW
        self._pending = bytearray()
        self._pending_ready = asyncio.Event()
        self._closing = False
        self._recording = record_path is not None
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._writer: asyncio.Task[None] | None = None
        self._player_live = False

    @property
    def monitoring(self) -> bool:
        """True while ffplay is running and being fed."""
        return self._player_live

    @property
    def duration_s(self) -> float:
        """Seconds of mixed call audio so far."""
        return self._mixdown.duration_s

    async def start(self) -> None:
        """Start recording (the file opens on the disk thread soon) and ffplay (when asked for); a missing
        ffplay only warns."""
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"AudioMixer.start() called on a {self._state.value} mixer; use a new mixer for each call"
            )
        if self.record_path is not None:
            # The file is opened by the writer, with the first batch of disk writes due: a hand-off
            # of its own cost a call's set-up about 0.1 ms of CPU. Audio tapped meanwhile waits.
            self._writer = asyncio.create_task(self._write_recording(), name="recorder-writer")
        self._state = _State.RUNNING
        if self.monitor:
            await self._start_player()

    def tap_caller(self, frame: bytes) -> None:
        """Add one caller frame (mu-law). Never blocks."""
        if self._state is not _State.STOPPED:
            self._mixdown.add_caller(frame)

    def tap_agent(self, audio: bytes) -> None:
        """Add agent audio (mu-law, any length) as it is queued for the caller. Never blocks."""
        if self._state is not _State.STOPPED:
            self._mixdown.add_agent(audio)

    def clear_agent(self) -> None:
        """Forget agent audio not yet played out (the caller's playback buffer was cleared on barge-in)."""
        self._mixdown.clear_agent()

    async def stop(self) -> None:
        """Flush the mix, close the recording and terminate ffplay. Safe to call more than once."""
        if self._state is _State.STOPPED:
            return
        self._state = _State.STOPPED
        self._mixdown.flush()
        writer = self._writer
        try:
            if writer is not None:
                self._closing = True
                self._pending_ready.set()
                await asyncio.shield(writer)
        finally:
            if writer is not None and not writer.done():
                # stop() was cancelled: still let the disk write in flight end before the file closes.
                await asyncio.wait({writer})
            try:
                await self._close_recording()
            finally:
                await self._stop_player()
        if self.record_dropped_bytes:
            log.warning(
                "the recording %s lost %.1f s of audio because the disk fell behind",
                self.record_path,
                self.record_dropped_bytes / (2 * SAMPLE_RATE_HZ),
            )
        if self.monitor_dropped_frames:
            log.info("live monitor skipped %d chunks because ffplay fell behind", self.monitor_dropped_frames)

    # -- mixed audio out ------------------------------------------------------------------

    def _on_mixed(self, pcm16: bytes) -> None:
        if self._recording:
            if len(self._pending) + len(pcm16) > RECORD_BUFFER_MAX_BYTES:
                self.record_dropped_bytes += len(pcm16)
            else:
                self._pending += pcm16
                if len(self._pending) >= RECORD_BATCH_BYTES:
                    self._pending_ready.set()
        if self._player_live:
            self._feed_player(pcm16)

    async def _write_recording(self) -> None:
        if not await self._open():
            return
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            # stop() flushes before it sets _closing, so once it is seen, this chunk is the last.
            closing = self._closing
            chunk = bytes(self._pending)
            self._pending.clear()
            if chunk and self._wav is not None:
                try:
                    # wave patches the header on every writeframes, so the file stays playable mid-call.
                    await disk_writes().write(self._wav.writeframes, chunk)
                except OSError as exc:
                    log.error(
                        "writing the recording %s failed (%s); the rest of the call is not recorded",
                        self.record_path,
                        exc,
                    )
                    self._recording = False
                    self._pending.clear()
                    return
            if closing:
                return

    async def _open(self) -> bool:
        """Open the recording on the disk thread; False (logged, nothing recorded) if it cannot be."""
        assert self.record_path is not None
        try:
            await disk_writes().write(self._open_on_disk_thread, b"")
        except Exception as exc:  # a full disk or a bad folder must cost the recording, not the call
            log.error(
                "could not open the recording %s (%s); the call goes on unrecorded", self.record_path, exc
            )
            self._recording = False
            self._pending.clear()
            return False
        return True

    def _open_on_disk_thread(self, _: bytes) -> None:
        assert self.record_path is not None
        self._file, self._wav = _open_recording(self.record_path)

    async def _close_recording(self) -> None:
        wav, file = self._wav, self._file
        self._wav = self._file = None
        if file is None:
            return
        try:
            if wav is not None:
                await asyncio.to_thread(wav.close)
        except OSError as exc:
            log.error("finishing the recording %s failed: %s", self.record_path, exc)
        finally:
            await asyncio.to_thread(file.close)

    # -- live monitor ---------------------------------------------------------------------

    async def _start_player(self) -> None:
        nothing_else = "recording continues" if self.record_path is not None else "nothing is recorded either"
        ffplay = shutil.which("ffplay")
        if ffplay is None:
            log.warning("live monitoring needs ffplay (apt-get install ffmpeg); %s", nothing_else)
            return
        try:
            self.player = await asyncio.create_subprocess_exec(
                ffplay, *FFPLAY_ARGS,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            log.warning("live monitoring could not start %s (%s); %s", ffplay, exc, nothing_else)
            return
        self._player_live = True

    def _feed_player(self, pcm16: bytes) -> None:
        player = self.player
        stdin = player.stdin if player is not None else None
        if player is None or stdin is None:
            return
        if player.returncode is not None or stdin.is_closing():
            self._player_live = False
            log.warning(
                "ffplay exited (status %s); live monitoring stopped, recording continues", player.returncode
            )
            return
        if stdin.transport.get_write_buffer_size() > MONITOR_BUFFER_MAX_BYTES:
            self.monitor_dropped_frames += 1
            return
        stdin.write(pcm16)

    async def _stop_player(self) -> None:
        player = self.player
        self._player_live = False
        if player is None:
            return
        if player.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                player.terminate()
        if player.stdin is not None:
            player.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await player.stdin.wait_closed()
        try:
            async with asyncio.timeout(FFPLAY_EXIT_TIMEOUT_S):
                await player.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                player.kill()
            await player.wait()


def _open_recording(path: Path) -> tuple[BinaryIO, wave.Wave_write]:
    try:
        file = path.open("wb")
    except FileNotFoundError:  # the folder's first recording (or someone removed the folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("wb")
    try:
        return file, open_wav_writer(file, SAMPLE_RATE_HZ, channels=1)
    except BaseException:
        file.close()
        raise
