"""Launch headless Debian Chromium with a WAV file as the microphone, driven by Playwright.

Never runs ``playwright install``: the browser is the system's ``/usr/bin/chromium``. The flags
come from the offline research notes: no network side channels, autoplay allowed (otherwise an
AudioContext made on page load stays suspended and ``resume()`` never resolves), and a fake
capture device reading a WAV once (``%noloop``; without it the file loops).
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from voicefsm.core.audio import SAMPLE_RATE_HZ, resample, ulaw_decode
from voicefsm.core.wav import write_wav

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

CHROMIUM = Path("/usr/bin/chromium")

SAFE_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--autoplay-policy=no-user-gesture-required",
]

Segment = str | float  # words to speak, or seconds of silence


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent: apt-get install chromium (the browser tests use the system browser)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "the playwright package is not installed (pip install playwright; no `playwright install` needed)"
        )
    return None


def speech_pcm16(text: str) -> bytes:
    """``text`` spoken by espeak-ng as 8 kHz 16-bit PCM (the same voice the server uses)."""
    from voicefsm.providers.local_tts import synthesize_ulaw

    return ulaw_decode(synthesize_ulaw(text))


def write_microphone_wav(
    path: Path, segments: Sequence[Segment], sample_rate_hz: int = SAMPLE_RATE_HZ
) -> float:
    """Write a 16-bit PCM WAV of speech and silences for Chromium's fake microphone; returns seconds.

    16-bit PCM because Chromium's fake capture device plays a mu-law WAV as pure silence.
    """
    parts: list[bytes] = []
    for segment in segments:
        if isinstance(segment, str):
            parts.append(speech_pcm16(segment))
        else:
            parts.append(b"\0\0" * round(segment * SAMPLE_RATE_HZ))
    pcm = b"".join(parts)
    if sample_rate_hz != SAMPLE_RATE_HZ:
        pcm = resample(pcm, SAMPLE_RATE_HZ, sample_rate_hz)
    buffer = io.BytesIO()
    write_wav(buffer, pcm, sample_rate_hz)
    path.write_bytes(buffer.getvalue())
    return len(pcm) / 2 / sample_rate_hz


@contextmanager
def launch_chromium(
    *, microphone_wav: Path | None = None, allow_microphone: bool = True, headless: bool = True
) -> Iterator[BrowserContext]:
    """A Playwright browser context on system Chromium with a fresh profile.

    ``microphone_wav`` becomes the microphone, played once from when the page opens it.
    With ``allow_microphone=False`` the page's microphone request is refused, as when a user says no.
    """
    from playwright.sync_api import sync_playwright

    args = [*SAFE_FLAGS, "--use-fake-device-for-media-stream"]
    if allow_microphone:
        args.append("--use-fake-ui-for-media-stream")
    else:
        args.append("--deny-permission-prompts")
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav.resolve()}%noloop")
    profile = tempfile.mkdtemp(prefix="voicefsm-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=headless,
                chromium_sandbox=False,
                args=args,
                viewport={"width": 1400, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
