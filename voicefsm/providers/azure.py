"""What Azure's recognizer and synthesizer share: the SDK import, the connection settings, errors, threads.

The providers themselves live in :mod:`voicefsm.providers.azure_stt` (:class:`AzureSpeechToText`)
and :mod:`voicefsm.providers.azure_tts` (:class:`AzureTextToSpeech`); both names can also be
imported from here.

The SDK (``azure-cognitiveservices-speech``) is native code that calls back on its own threads
and whose blocking calls can take 10 s or more against a dead service. So every blocking call
runs in a short-lived daemon thread that the event loop waits on with a deadline
(:func:`run_blocking`); a call that overruns is abandoned, and its thread ends when the SDK
returns. Daemon threads rather than ``asyncio.to_thread``: a stuck SDK call must not hold a
worker of the loop's shared executor, nor delay the process's exit, which joins that executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from voicefsm.errors import ProviderError, ProviderUnavailable

if TYPE_CHECKING:
    from voicefsm.providers.azure_stt import AzureSpeechToText
    from voicefsm.providers.azure_tts import AzureTextToSpeech
    from voicefsm.settings import Settings

__all__ = [
    "INSTALL_HINT",
    "AzureAccount",
    "AzureSpeechError",
    "AzureSpeechToText",
    "AzureTextToSpeech",
    "account_from_settings",
    "cancellation_error",
    "import_sdk",
    "run_blocking",
    "speech_config",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'voicefsm[azure]'"
MAX_DETAILS_CHARS = 300

#: ``CancellationErrorCode`` name -> (retryable, what it means and what to do).
ERROR_HELP: dict[str, tuple[bool, str]] = {
    "AuthenticationFailure": (
        False,
        "the service rejected the key; check AZURE_SPEECH_KEY and that AZURE_SPEECH_REGION "
        "(or AZURE_SPEECH_ENDPOINT) is the key's resource",
    ),
    "Forbidden": (False, "the key may not use this resource or feature; check its tier and region"),
    "BadRequest": (False, "the service rejected the request; check the language, the voice and the endpoint"),
    "TooManyRequests": (True, "too many requests for this resource; lower concurrency or raise the quota"),
    "ConnectionFailure": (True, "could not reach or stay connected to the service; check network and proxy"),
    "ServiceTimeout": (True, "the service did not answer in time"),
    "ServiceError": (True, "the service failed"),
    "ServiceUnavailable": (True, "the service is unavailable; try again shortly"),
    "ServiceRedirectTemporary": (True, "the service redirected the request"),
    "ServiceRedirectPermanent": (False, "the service moved; update AZURE_SPEECH_ENDPOINT or the SDK"),
    "RuntimeError": (False, "the Speech SDK failed inside; see its details"),
}


class AzureSpeechError(ProviderError):
    """Azure cancelled recognition or synthesis; ``error_code`` names the SDK's ``CancellationErrorCode``."""

    def __init__(
        self, provider: str, reason: str, *, error_code: str, details: str = "", retryable: bool = False
    ) -> None:
        super().__init__(provider, reason, retryable=retryable)
        self.error_code = error_code
        self.details = details


def cancellation_error(provider: str, error_code: str, details: str) -> AzureSpeechError:
    """The error for a cancellation whose ``CancellationErrorCode`` is named ``error_code``."""
    retryable, help_text = ERROR_HELP.get(error_code, (True, "the service cancelled the request"))
    details = " ".join(details.split())[:MAX_DETAILS_CHARS]
    said = f" (service said: {details})" if details else ""
    return AzureSpeechError(
        provider,
        f"{error_code}: {help_text}{said}",
        error_code=error_code,
        details=details,
        retryable=retryable,
    )


def import_sdk(provider: str) -> Any:
    """The ``azure.cognitiveservices.speech`` module, or ProviderUnavailable saying how to install it."""
    try:
        import azure.cognitiveservices.speech as speechsdk
    except ImportError as exc:  # also a missing native library (libssl, libasound) of the wheel
        raise ProviderUnavailable(
            provider, f"the Azure Speech SDK is not installed or cannot load ({exc}): {INSTALL_HINT}"
        ) from exc
    return speechsdk


class AzureAccount(TypedDict):
    """The key, and where the service is: what both providers take from the settings."""

    key: str
    region: str | None
    host: str | None
    endpoint: str | None


def account_from_settings(settings: Settings) -> AzureAccount:
    """``AZURE_SPEECH_KEY``, ``AZURE_SPEECH_REGION``, ``AZURE_SPEECH_HOST`` and ``AZURE_SPEECH_ENDPOINT``."""
    key = settings.azure_speech_key
    return AzureAccount(
        key=key.get_secret_value() if key is not None else "",
        region=settings.azure_speech_region,
        host=settings.azure_speech_host,
        endpoint=settings.azure_speech_endpoint,
    )


def speech_config(
    speechsdk: Any, provider: str, *, key: str, region: str | None, host: str | None, endpoint: str | None
) -> Any:
    """A ``SpeechConfig`` for ``key``, reaching the service at ``endpoint``, ``host`` or ``region``.

    The first one set wins: ``endpoint``, then ``host`` (``ws://127.0.0.1:5000`` for a container or
    a test fake), then ``region``.
    """
    if not key:
        raise ProviderUnavailable(provider, "no key: set AZURE_SPEECH_KEY or pass key=")
    try:
        if endpoint:
            return speechsdk.SpeechConfig(subscription=key, endpoint=endpoint)
        if host:
            return speechsdk.SpeechConfig(subscription=key, host=host)
        if region:
            return speechsdk.SpeechConfig(subscription=key, region=region)
    except (ValueError, RuntimeError) as exc:
        raise ProviderUnavailable(provider, f"the Azure connection settings were refused: {exc}") from exc
    raise ProviderUnavailable(
        provider, "no region: set AZURE_SPEECH_REGION, AZURE_SPEECH_HOST or AZURE_SPEECH_ENDPOINT"
    )


def locale_of(voice: str) -> str | None:
    """The locale a voice name starts with (``fi-FI`` for ``fi-FI-NooraNeural``), if it has one."""
    parts = voice.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else None


async def run_blocking(fn: Callable[[], object], *, timeout_s: float, what: str) -> bool:
    """Run the blocking ``fn`` in a daemon thread; True if it returned within ``timeout_s``.

    An exception from ``fn`` is re-raised here. On timeout the thread is left to end by
    itself (the SDK's own timeouts bound it) and nothing waits for it any more.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()

    def settle(outcome: BaseException | None) -> None:
        if not done.done():
            done.set_result(outcome)

    def target() -> None:
        outcome: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # reported on the loop; a thread must not die with a traceback
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=target, name=f"voicefsm-azure-{what}", daemon=True).start()
    await asyncio.wait({done}, timeout=timeout_s)
    if not done.done():
        done.cancel()
        log.warning("Azure %s did not finish within %g s; left to finish in the background", what, timeout_s)
        return False
    outcome = done.result()
    if outcome is not None:
        raise outcome
    return True


def __getattr__(name: str) -> Any:
    # The providers import this module, so they are re-exported lazily rather than imported above.
    if name == "AzureSpeechToText":
        from voicefsm.providers.azure_stt import AzureSpeechToText

        return AzureSpeechToText
    if name == "AzureTextToSpeech":
        from voicefsm.providers.azure_tts import AzureTextToSpeech

        return AzureTextToSpeech
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
