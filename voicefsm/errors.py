"""Errors raised by voicefsm.

    VoiceFsmError
    ├── CallError
    │   └── TransportClosed           a far end's connection is gone; nothing more can be sent
    ├── ProviderError                 a speech provider failed (carries provider and reason)
    │   └── ProviderUnavailable       a provider's SDK or settings are missing
    ├── TelephonyError                a Twilio REST request failed
    ├── MissingStreamUrlError         no public URL to point Twilio's <Stream> at
    └── FlowError                     (see voicefsm.flow)

Each error keeps its data in attributes and builds its message in ``__str__``.
"""

from __future__ import annotations


class VoiceFsmError(Exception):
    """Base class of every error voicefsm raises on purpose."""


class CallError(VoiceFsmError):
    """Something about one phone call went wrong."""


class TransportClosed(CallError):
    """A far end's connection is gone; ``detail`` says how. Nothing more can be sent on it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class MissingStreamUrlError(VoiceFsmError):
    """No public URL is configured, so Twilio cannot be told where to stream."""

    def __str__(self) -> str:
        return (
            "no public URL is configured for Twilio's media stream; set VOICE_STREAM_URL "
            "(e.g. wss://example.ngrok.app/twilio/stream) or pass --public-url https://example.ngrok.app"
        )


class ProviderError(VoiceFsmError):
    """A speech provider failed; ``retryable`` says whether trying again could help."""

    def __init__(self, provider: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(provider, reason)
        self.provider = provider
        self.reason = reason
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason}"


class ProviderUnavailable(ProviderError):
    """A provider cannot be built here: its SDK extra or its settings are missing."""


class TelephonyError(VoiceFsmError):
    """A Twilio REST request failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, action: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(action, reason, status)
        self.action = action
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"Twilio {self.action} failed{status}: {self.reason}"
