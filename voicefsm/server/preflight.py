"""Refuse, at start-up, configuration that could only fail later, at call time.

``voicefsm serve`` calls :func:`check_configuration` after choosing providers and before opening
anything. Each problem is one :class:`ConfigurationError` whose message is one line naming the
setting and the fix; the CLI prints it and exits non-zero. Things that are allowed but worth
knowing (an open dev server on a network, sessions that end with the process) are logged loudly.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from voicefsm.errors import ProviderUnavailable
from voicefsm.providers.registry import choose_provider, get_tts_class
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

#: Which setting each cloud provider needs, and the environment variable that sets it.
PROVIDER_KEYS: dict[str, tuple[str, str]] = {
    "elevenlabs": ("elevenlabs_api_key", "ELEVENLABS_API_KEY"),
    "azure": ("azure_speech_key", "AZURE_SPEECH_KEY"),
}


class ConfigurationError(Exception):
    """A setting that would make calls fail; the message names it and the fix, on one line."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_signing(settings: Settings) -> None:
    """With a Twilio auth token, Twilio must reach us over https and stream over wss.

    A public URL on loopback is a local stand-in's (Twilio itself cannot reach it): plain http and
    ws are allowed there, so signed calls can be tested end to end on one machine.
    """
    if settings.public_url and _is_loopback(urlsplit(settings.public_url).hostname or ""):
        return
    if settings.public_url and urlsplit(settings.public_url).scheme != "https":
        raise ConfigurationError(
            f"VOICEFSM_PUBLIC_URL / --public-url is {settings.public_url!r}, which is not https: Twilio "
            "and browsers need TLS; put a TLS proxy in front (docs/deploy.md) and pass --public-url https://<host>"
        )
    if settings.dev_mode:
        return
    stream = settings.stream_url()
    if stream is None:
        raise ConfigurationError(
            "TWILIO_AUTH_TOKEN is set but no public URL is: signatures are computed over the URL Twilio "
            "calls; pass --public-url https://<host> (or set VOICEFSM_PUBLIC_URL)"
        )
    if urlsplit(stream).scheme != "wss":
        raise ConfigurationError(
            f"TWILIO_AUTH_TOKEN is set but the media stream URL is {stream!r}: Twilio streams only over "
            "wss://; set VOICE_STREAM_URL=wss://<host>/twilio/stream or pass --public-url https://<host>"
        )


def check_provider_keys(settings: Settings, stt_name: str | None, tts_name: str) -> None:
    """A cloud provider without its key would fail on the first call: say which variable to set."""
    uses = [("STT", stt_name, "--stt"), ("TTS", tts_name, "--tts")]
    if settings.tts_fallback:
        uses.append(("fallback TTS", settings.tts_fallback, "VOICEFSM_TTS_FALLBACK"))
        try:
            get_tts_class(settings.tts_fallback)
        except ProviderUnavailable as exc:
            raise ConfigurationError(f"VOICEFSM_TTS_FALLBACK={settings.tts_fallback}: {exc.reason}") from None
    for kind, name, option in uses:
        if name is None or name not in PROVIDER_KEYS:
            continue
        field, variable = PROVIDER_KEYS[name]
        if getattr(settings, field) is None:
            raise ConfigurationError(
                f"the {kind} provider is {name} ({option}) but {variable} is not set: set {variable} "
                f"(in the environment or .env), or choose another provider with {option}"
            )


def check_recordings_dir(settings: Settings) -> None:
    """The recordings folder must exist (or be creatable) and take a file now, not at the first call."""
    if not settings.recordings_dir:
        return
    folder = Path(settings.recordings_dir)
    fix = "make it writable by this user, or set VOICEFSM_RECORDINGS_DIR to a folder that is"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".voicefsm-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(
            f"the recordings folder {str(folder)!r} (VOICEFSM_RECORDINGS_DIR) is not writable "
            f"({reason}): {fix}"
        ) from None


def check_port(settings: Settings, bind: Callable[[str, int], None] | None = None) -> None:
    """Fail now if the port is taken, rather than after the records are opened."""
    if settings.port == 0:
        return
    try:
        (bind or _try_bind)(settings.host, settings.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {settings.port} on {settings.host} ({settings.host}:{settings.port}) is already in "
                f"use (another voicefsm serve?): stop that process, or choose another with --port "
                f"{settings.port + 1 if settings.port else 8081} (or VOICE_SERVER_PORT)"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigurationError(
                f"not allowed to listen on port {settings.port}: ports below 1024 need privileges; "
                "use --port 8080 behind the TLS proxy"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigurationError(
                f"this machine has no address {settings.host} (--host / VOICEFSM_HOST): use 0.0.0.0 for all "
                "interfaces or 127.0.0.1 for this machine only"
            ) from None
        raise


def _try_bind(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        sock.bind((host, port))


def check_dev_exposure(settings: Settings) -> None:
    """An open dev server belongs on loopback; off it only when asked for, and then loudly."""
    if not settings.dev_mode or _is_loopback(settings.host):
        return
    if not settings.insecure:
        raise ConfigurationError(
            f"refusing to listen on {settings.host} without TWILIO_AUTH_TOKEN (dev mode: no login, no "
            "signatures): set TWILIO_AUTH_TOKEN, or pass --insecure to open it on a trusted network"
        )
    log.warning(
        "DEV MODE ON A NETWORK (--insecure): %s:%d serves calls, recordings and the API to anyone who can "
        "reach it, with no login and no Twilio signature check",
        settings.host,
        settings.port,
    )


def note_access(settings: Settings) -> None:
    """Allowed but worth knowing in production: who can log in, and how long a session lives."""
    if settings.dev_mode:
        return
    if settings.api_tokens is None and not settings.api_tokens_file:
        log.warning(
            "no VOICEFSM_API_TOKENS or VOICEFSM_API_TOKENS_FILE: the API, the pages and /metrics refuse "
            "everyone (Twilio calls still work)"
        )
    if settings.secret_key is None:
        log.warning("no VOICEFSM_SECRET_KEY: logins last only as long as this process")
    if settings.api_tokens_file and not os.access(settings.api_tokens_file, os.R_OK):
        raise ConfigurationError(
            f"VOICEFSM_API_TOKENS_FILE {settings.api_tokens_file!r} cannot be read: create it (one token a "
            "line) and make it readable by this user, or unset it"
        )


def check_configuration(
    settings: Settings, *, stt: str | None = None, tts: str | None = None, uses_stt: bool = True
) -> None:
    """Every start-up check, cheapest and most likely first; raises the first ConfigurationError.

    ``stt`` and ``tts`` are the provider options given (``--stt``/``--tts``), chosen as ``plan`` does.
    """
    check_dev_exposure(settings)
    check_signing(settings)
    stt_name = choose_provider("stt", settings, stt) if uses_stt else None
    check_provider_keys(settings, stt_name, choose_provider("tts", settings, tts))
    note_access(settings)
    check_recordings_dir(settings)
    check_port(settings)
