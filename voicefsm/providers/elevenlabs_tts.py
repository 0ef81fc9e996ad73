"""ElevenLabs text-to-speech over the streaming HTTP API, asked for 8 kHz mu-law so nothing is transcoded.

One ``POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000`` per prompt, read
in 160-byte chunks (one Twilio frame each). Every failure becomes a
:class:`~voicefsm.errors.ProviderError` whose ``retryable`` says whether trying again may help:
HTTP errors by their status and ElevenLabs' ``detail.status``, a server that sends no audio
within ``first_byte_timeout_s``, a stall longer than ``timeout_s``, and a body cut off
before its end. Cancelling the iteration (barge-in) closes the HTTP response at once.

The SDK is imported when a synthesizer is built, so ``import voicefsm`` works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.base import TextCallback

if TYPE_CHECKING:
    from elevenlabs.client import AsyncElevenLabs

    from voicefsm.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "elevenlabs-tts"
INSTALL_HINT = "pip install 'voicefsm[elevenlabs]'"
OUTPUT_FORMAT = "ulaw_8000"
DEFAULT_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"
DEFAULT_MODEL = "eleven_flash_v2_5"

# ElevenLabs' ``detail.status`` values: (retryable, what it means and what to do).
_KNOWN_STATUSES: dict[str, tuple[bool, str]] = {
    "invalid_api_key": (False, "the API key was rejected; check ELEVENLABS_API_KEY"),
    "missing_permissions": (False, "the API key lacks the text_to_speech permission; widen its scope"),
    "quota_exceeded": (False, "the account's character quota is used up; top up or upgrade the plan"),
    "too_many_concurrent_requests": (
        True,
        "too many concurrent requests for this plan; lower the number of simultaneous calls or upgrade",
    ),
    "system_busy": (True, "ElevenLabs is busy; try again shortly"),
    "voice_not_found": (False, "the voice does not exist for this account; check ELEVENLABS_VOICE_ID"),
    "max_character_limit_exceeded": (False, "the text is longer than the model accepts; split the prompt"),
}


def _import_sdk() -> tuple[type[AsyncElevenLabs], type[Exception]]:
    try:
        from elevenlabs.client import AsyncElevenLabs
        from elevenlabs.core.api_error import ApiError
    except ImportError as exc:
        raise ProviderUnavailable(PROVIDER, f"the ElevenLabs SDK is not installed: {INSTALL_HINT}") from exc
    return AsyncElevenLabs, ApiError


def api_error_to_provider_error(
    status_code: int | None, body: Any, *, provider: str = PROVIDER
) -> ProviderError:
    """Turn an ElevenLabs HTTP error (status and JSON body) into a ProviderError that reads like help."""
    detail = body.get("detail") if isinstance(body, dict) else None
    code = detail.get("status") if isinstance(detail, dict) else None
    message = (
        detail.get("message") if isinstance(detail, dict) else detail if isinstance(detail, str) else None
    )
    if message is None and isinstance(body, str) and body.strip():
        message = body.strip()
    known = _KNOWN_STATUSES.get(code) if isinstance(code, str) else None
    if known is not None:
        retryable, help_text = known
    elif status_code is not None and (status_code == 429 or status_code >= 500):
        retryable, help_text = True, "the service failed; try again shortly"
    else:
        retryable, help_text = False, "the request was refused"
    parts = [f"HTTP {status_code}" if status_code is not None else "HTTP error"]
    if isinstance(code, str):
        parts.append(code)
    reason = f"{' '.join(parts)}: {help_text}"
    if message:
        reason += f" (server said: {str(message)[:200]})"
    return ProviderError(provider, reason, retryable=retryable)


class ElevenLabsTextToSpeech:
    """Streams ElevenLabs speech as 8 kHz mu-law, 160 bytes per chunk, with a first-byte deadline."""

    name = "elevenlabs"

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str = DEFAULT_VOICE_ID,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        first_byte_timeout_s: float = 5.0,
        language_code: str | None = None,
        optimize_streaming_latency: int | None = None,
    ) -> None:
        if not api_key:
            raise ProviderUnavailable(PROVIDER, "no API key: set ELEVENLABS_API_KEY or pass api_key=")
        client_class, self._api_error = _import_sdk()
        self.on_error: TextCallback | None = None
        self.voice_id = voice_id
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        self.language_code = language_code
        self.optimize_streaming_latency = optimize_streaming_latency
        # Our own httpx client, so aclose() can release its connections (the SDK offers no close).
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=True)
        # api_key is always explicit: the SDK's default reads ELEVENLABS_API_KEY at import time.
        self._client = client_class(
            api_key=api_key, base_url=base_url, timeout=timeout_s, httpx_client=self._http
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ElevenLabsTextToSpeech:
        """Build from ``ELEVENLABS_*`` settings; raises ProviderUnavailable without an API key or the SDK."""
        key = settings.elevenlabs_api_key
        if key is None or not key.get_secret_value():
            raise ProviderUnavailable(PROVIDER, "no API key: set ELEVENLABS_API_KEY")
        return cls(
            api_key=key.get_secret_value(),
            voice_id=settings.elevenlabs_voice_id,
            model=settings.elevenlabs_model,
            base_url=settings.elevenlabs_base_url,
            timeout_s=settings.elevenlabs_timeout_s,
            first_byte_timeout_s=min(5.0, settings.elevenlabs_timeout_s),
        )

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield mu-law chunks of ``text`` as they arrive; raises ProviderError on any failure."""
        if self._closed:
            raise ProviderError(PROVIDER, "the synthesizer was closed; build a new one")
        if not text.strip():
            raise ProviderError(PROVIDER, "there is no text to speak")
        stream = self._client.text_to_speech.stream(
            voice_id=self.voice_id,
            text=text,
            model_id=self.model,
            output_format=OUTPUT_FORMAT,
            language_code=self.language_code,
            optimize_streaming_latency=self.optimize_streaming_latency,
            request_options={
                # None: the audio as it arrives (httpx's aiter_bytes(chunk_size=None)), not re-cut. A fixed
                # size either holds the first bytes back until it is full or, small, sends every 20 ms
                # of audio through the call's speech path on its own. The call frames it for Twilio.
                "chunk_size": None,
                "timeout_in_seconds": self.timeout_s,
                "max_retries": 0,
            },
        )
        received = 0
        # aclosing: when the consumer stops early or is cancelled, the HTTP response is closed now,
        # not later by the garbage collector's finalizer task.
        async with contextlib.aclosing(stream):
            try:
                try:
                    async with asyncio.timeout(self.first_byte_timeout_s):
                        first = await anext(stream)
                except StopAsyncIteration:
                    raise ProviderError(PROVIDER, "the service returned no audio", retryable=True) from None
                except TimeoutError:
                    raise ProviderError(
                        PROVIDER,
                        f"no audio within {self.first_byte_timeout_s:g} s; the service did not answer",
                        retryable=True,
                    ) from None
                received += len(first)
                yield first
                async for chunk in stream:
                    received += len(chunk)
                    yield chunk
            except ProviderError:
                raise
            except self._api_error as exc:
                raise api_error_to_provider_error(
                    getattr(exc, "status_code", None), getattr(exc, "body", None)
                ) from None
            except httpx.TimeoutException as exc:
                where = "before the first audio" if received == 0 else f"after {received} bytes of audio"
                raise ProviderError(
                    PROVIDER,
                    f"the request timed out {where} ({type(exc).__name__}, limit {self.timeout_s:g} s)",
                    retryable=True,
                ) from None
            except httpx.RemoteProtocolError as exc:
                raise ProviderError(
                    PROVIDER,
                    f"the audio stream was cut off after {received} bytes ({exc})",
                    retryable=True,
                ) from None
            except (httpx.HTTPError, OSError) as exc:
                raise ProviderError(
                    PROVIDER,
                    f"could not reach the service at {self.base_url or 'api.elevenlabs.io'}: "
                    f"{type(exc).__name__}: {exc}",
                    retryable=True,
                ) from None

    async def aclose(self) -> None:
        """Close the HTTP connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()
