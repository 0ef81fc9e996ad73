"""``voicefsm serve`` refuses configuration that would fail at call time: one line, non-zero, quickly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOKING = REPO / "flows" / "booking.py"
#: The issue's promise: each misconfiguration stops `voicefsm serve` within 5 s.
DEADLINE_S = 5.0
PRODUCTION = {
    "TWILIO_AUTH_TOKEN": "twilio-secret-for-preflight",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "VOICEFSM_API_TOKENS": "preflight-token",
    "VOICEFSM_SECRET_KEY": "preflight-key",
}


def clean_env(**extra: str) -> dict[str, str]:
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return {**env, **extra}


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``voicefsm serve flows/booking.py ARGS``, which must stop by itself; returns it and its time."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "voicefsm", "serve", str(BOOKING), "--port", str(free_port()), *args],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_refused(done: subprocess.CompletedProcess[str], elapsed: float, *needles: str) -> str:
    """Exit 2, within the deadline, one line on stderr that names the setting; no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert elapsed < DEADLINE_S, f"took {elapsed:.1f} s"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stdout
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_signing_without_a_wss_stream_url_is_refused(tmp_path: Path) -> None:
    done, elapsed = serve(tmp_path, **PRODUCTION, VOICE_STREAM_URL="ws://voice.example.test/twilio/stream")
    assert_refused(done, elapsed, "TWILIO_AUTH_TOKEN", "wss://", "VOICE_STREAM_URL")
    done, elapsed = serve(tmp_path, **PRODUCTION)
    assert_refused(done, elapsed, "no public URL", "--public-url https://")


def test_a_public_url_that_is_not_https_is_refused(tmp_path: Path) -> None:
    done, elapsed = serve(tmp_path, "--public-url", "http://voice.example.test", **PRODUCTION)
    assert_refused(done, elapsed, "--public-url", "not https", "TLS proxy")


def test_a_cloud_provider_without_its_key_is_refused(tmp_path: Path) -> None:
    done, elapsed = serve(tmp_path, "--stt", "elevenlabs", "--tts", "local")
    assert_refused(done, elapsed, "STT provider is elevenlabs", "ELEVENLABS_API_KEY is not set", "--stt")
    done, elapsed = serve(tmp_path, "--tts", "local", VOICEFSM_TTS_FALLBACK="azure")
    assert_refused(done, elapsed, "fallback TTS provider is azure", "AZURE_SPEECH_KEY")
    done, elapsed = serve(tmp_path, "--tts", "local", VOICEFSM_TTS_FALLBACK="espeak")
    assert_refused(done, elapsed, "VOICEFSM_TTS_FALLBACK=espeak", "choose one of", "local")


def test_a_recordings_folder_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    done, elapsed = serve(tmp_path, VOICEFSM_RECORDINGS_DIR=str(blocker / "recordings"))
    assert_refused(done, elapsed, "recordings folder", "VOICEFSM_RECORDINGS_DIR", "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_recordings_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        done, elapsed = serve(tmp_path, VOICEFSM_RECORDINGS_DIR=str(locked / "recordings"))
    finally:
        locked.chmod(0o700)
    assert_refused(done, elapsed, "recordings folder", "VOICEFSM_RECORDINGS_DIR", "not writable")


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, elapsed = serve(tmp_path, "--port", str(port))
    assert_refused(done, elapsed, f"port {port}", "already in use", "--port")


def test_an_open_dev_server_off_loopback_is_refused_unless_asked_for_loudly(tmp_path: Path) -> None:
    done, elapsed = serve(tmp_path, "--host", "0.0.0.0")
    assert_refused(done, elapsed, "TWILIO_AUTH_TOKEN", "--insecure")


def test_insecure_dev_mode_on_a_network_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    from voicefsm.server.preflight import check_dev_exposure
    from voicefsm.settings import Settings

    check_dev_exposure(Settings.model_validate({"host": "0.0.0.0", "insecure": True}))
    assert "DEV MODE ON A NETWORK (--insecure)" in caplog.text
    assert caplog.records[-1].levelname == "WARNING"


def test_a_loopback_public_url_may_be_plain_http_for_a_local_twilio_stand_in() -> None:
    from voicefsm.server.preflight import ConfigurationError, check_signing
    from voicefsm.settings import Settings

    signed = {"twilio_auth_token": "secret"}
    check_signing(Settings.model_validate({**signed, "public_url": "http://127.0.0.1:8080"}))
    check_signing(Settings.model_validate({**signed, "public_url": "http://localhost:8080"}))
    with pytest.raises(ConfigurationError, match="not https"):
        check_signing(Settings.model_validate({**signed, "public_url": "http://voice.example.test"}))
