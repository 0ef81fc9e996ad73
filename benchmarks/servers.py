"""Start the servers under test as subprocesses pinned to one core, wait until they answer, stop them.

Each server gets a fresh port, its own working directory (records database and recordings
live there, and no ``.env`` is picked up), and an environment without Twilio credentials, so
it runs in dev mode on loopback exactly as ``voicefsm serve`` does on a developer's machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: Settings that would take the server out of dev mode or point it elsewhere.
_SCRUBBED = (
    "TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN_SECONDARY",
    "TWILIO_ACCOUNT_SID",
    "VOICEFSM_PUBLIC_URL",
    "PUBLIC_URL",
    "VOICE_STREAM_URL",
    "VOICEFSM_HOST",
    "VOICE_MONITOR",
)

#: What each server under test runs, after ``python``; {flows} is the repository's flows/ folder.
VARIANTS: dict[str, tuple[str, ...]] = {
    "floor": (str(BENCH / "floor_echo.py"),),
    "voicefsm": ("-m", "voicefsm", "serve", "{flows}/echo.py", "--tts", "scripted"),
    "voicefsm-norec": ("-m", "voicefsm", "serve", "{flows}/echo.py", "--tts", "scripted"),
    "voicefsm-asyncio": (str(BENCH / "asyncio_serve.py"), "serve", "{flows}/echo.py", "--tts", "scripted"),
    "booking": (
        *("-m", "voicefsm", "serve", "{flows}/booking.py"),
        *("--stt", "scripted", "--tts", "scripted"),
    ),
    # The real ElevenLabs provider against benchmarks/tts_standin.py (ELEVENLABS_BASE_URL in its env).
    "booking-tts": (
        *("-m", "voicefsm", "serve", "{flows}/booking.py"),
        *("--stt", "scripted", "--tts", "elevenlabs"),
    ),
    "tts-standin": (str(BENCH / "tts_standin.py"),),
}
#: flows/booking.py's greeting: the stand-in counts how often it was asked for it.
BOOKING_GREETING = "Hi, this is Bright Smile Dental."
DESCRIPTIONS = {
    "floor": "minimal FastAPI/uvicorn echo (benchmarks/floor_echo.py)",
    "voicefsm": "voicefsm serve flows/echo.py --tts scripted (records calls, as shipped)",
    "voicefsm-norec": "the same with VOICEFSM_RECORDINGS_DIR='' (no call recording)",
    "voicefsm-asyncio": "the same as voicefsm, on asyncio's default loop instead of uvloop",
    "booking": "voicefsm serve flows/booking.py --stt scripted --tts scripted",
    "booking-tts": "voicefsm serve flows/booking.py --stt scripted --tts elevenlabs (the stand-in below)",
    "tts-standin": "an ElevenLabs stand-in with a set time to first byte (benchmarks/tts_standin.py)",
}


@dataclass(frozen=True, slots=True)
class Server:
    """A started server: its process (the pid is the server's own: taskset execs) and address."""

    variant: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/stream"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(argv: list[str], core: int | None) -> list[str]:
    """``argv`` run on ``core`` through taskset (unpinned when there is no core to spare)."""
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]


def server_env(variant: str, workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED}
    env["VOICEFSM_DB_URL"] = f"sqlite+aiosqlite:///{workdir / 'records.db'}"
    # Every booking caller asks for the same time: each call gets its own fake calendar, so all book it.
    env["VOICEFSM_FAKE_RESOURCES"] = "1"
    recording = variant != "voicefsm-norec"
    env["VOICEFSM_RECORDINGS_DIR"] = str(workdir / "recordings") if recording else ""
    env["VOICEFSM_DRAIN_TIMEOUT_S"] = "2"
    # The capacity search measures what one core holds; the admission limit (200 calls by default, an
    # operator's setting for their machine) would refuse the calls past it with 1013 instead.
    env["VOICEFSM_MAX_CONCURRENT_CALLS"] = "100000"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def wait_ready(server: Server, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll ``/healthz`` until it answers 200; raise with the server's log if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{server.http_url}/healthz", timeout=1.0) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.05)
    log = server.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(f"{server.variant} did not start on port {server.port}; its output:\n{log}")


def stop(server: Server) -> None:
    """SIGTERM (voicefsm drains), then SIGKILL if it is still there after STOP_TIMEOUT_S."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(
    variant: str,
    workdir: Path,
    core: int | None,
    *,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``variant`` on ``core`` in a fresh folder under ``workdir``; stop it on exit."""
    folder = workdir / f"{variant}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    port = free_port()
    argv = [sys.executable, *(part.format(flows=ROOT / "flows") for part in VARIANTS[variant])]
    argv += [*extra_args, "--port", str(port)]
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        env = {**server_env(variant, folder), **(extra_env or {})}
        command = pinned(argv, core)
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(variant, process, port, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)
        shutil.rmtree(folder / "recordings", ignore_errors=True)
