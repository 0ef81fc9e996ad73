"""Azure Speech text-to-speech, asked for ``Raw8Khz8BitMonoMULaw`` so the audio goes to the phone as it comes.

One SDK synthesizer is kept warm and serves one prompt at a time. Its ``synthesizing`` events
(on SDK threads) carry the audio chunks; they are handed to the event loop through an
``asyncio.Queue`` and yielded as they arrive. The prompt ends with ``synthesis_completed`` or
``synthesis_canceled``; a cancellation becomes an :class:`~voicefsm.providers.azure.AzureSpeechError`
carrying the SDK's ``error_code`` and details.

Deadlines the SDK lacks: no audio within ``first_chunk_timeout_s`` (the SDK waits 30-80 s) or
a gap longer than ``chunk_timeout_s`` stops the synthesis and raises. Cancelling the iteration
(barge-in) calls ``stop_speaking_async`` in a thread bounded by ``stop_timeout_s`` and waits, as
long again, for the SDK to confirm; a synthesizer that does not confirm is never reused (a new
one is built for the next prompt) and is released in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicefsm.errors import ProviderError
from voicefsm.providers.azure import (
    AzureSpeechError,
    account_from_settings,
    cancellation_error,
    import_sdk,
    locale_of,
    run_blocking,
    speech_config,
)
from voicefsm.providers.base import TextCallback

if TYPE_CHECKING:
    from voicefsm.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "azure-tts"
DEFAULT_VOICE = "en-US-JennyNeural"


@dataclass(frozen=True, slots=True)
class _End:
    """The SDK's last word on a prompt: completed (no error) or cancelled."""

    error: ProviderError | None = None


@dataclass(eq=False)
class _Request:
    """One prompt being synthesized; the loop-side handlers fill its queue."""

    queue: asyncio.Queue[bytes | _End] = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    future: Any = None  # the SDK's ResultFuture, kept alive while the prompt runs


class _Channel:
    """One SDK synthesizer and the prompt it serves. SDK threads post into it; the loop reads it."""

    def __init__(self, sdk: Any, config: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.synthesizer = sdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        self.connection = sdk.Connection.from_speech_synthesizer(self.synthesizer)
        self.loop = loop
        self.request: _Request | None = None
        self.retired = False
        self.synthesizer.synthesizing.connect(self._sdk_audio)
        self.synthesizer.synthesis_completed.connect(self._sdk_completed)
        self.synthesizer.synthesis_canceled.connect(self._sdk_canceled)

    def _post(self, item: bytes | _End) -> None:
        if self.retired:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
            self.loop.call_soon_threadsafe(self._deliver, item)

    def _sdk_audio(self, event: Any) -> None:
        data = event.result.audio_data
        if data:
            self._post(bytes(data))

    def _sdk_completed(self, event: Any) -> None:
        self._post(_End())

    def _sdk_canceled(self, event: Any) -> None:
        details = event.result.cancellation_details
        reason, code = details.reason.name, details.error_code.name
        error: ProviderError
        if reason == "Error":
            error = cancellation_error(PROVIDER, code, details.error_details or "")
        else:
            error = ProviderError(PROVIDER, f"synthesis was stopped ({reason})")
        self._post(_End(error))

    def _deliver(self, item: bytes | _End) -> None:
        request = self.request
        if request is None or request.done.is_set():
            return  # a prompt that was given up on
        request.queue.put_nowait(item)
        if isinstance(item, _End):
            request.done.set()

    def release(self, stop_first: bool) -> None:
        """Stop the prompt (if asked), close the socket, drop the handlers; blocking: call it in a thread."""
        self.retired = True
        try:
            if stop_first:
                self.synthesizer.stop_speaking_async().get()
            with contextlib.suppress(RuntimeError):  # already closed
                self.connection.close()
        finally:
            for signal in (
                self.synthesizer.synthesizing,
                self.synthesizer.synthesis_completed,
                self.synthesizer.synthesis_canceled,
            ):
                signal.disconnect_all()


class AzureTextToSpeech:
    """Streams Azure speech as 8 kHz mu-law as it is produced, with first-chunk and stall deadlines."""

    name = "azure"

    def __init__(
        self,
        *,
        key: str,
        region: str | None = None,
        host: str | None = None,
        endpoint: str | None = None,
        voice: str = DEFAULT_VOICE,
        language: str | None = None,
        first_chunk_timeout_s: float = 5.0,
        chunk_timeout_s: float = 10.0,
        stop_timeout_s: float = 2.0,
    ) -> None:
        self._sdk = import_sdk(PROVIDER)
        self._config = speech_config(
            self._sdk, PROVIDER, key=key, region=region, host=host, endpoint=endpoint
        )
        self._config.set_speech_synthesis_output_format(
            self._sdk.SpeechSynthesisOutputFormat.Raw8Khz8BitMonoMULaw
        )
        self._config.speech_synthesis_voice_name = voice
        # Not in the SDK's PropertyId enum, but honoured: the SDK's own first-chunk wait (30-80 s by
        # default) ends near ours, so nothing inside it outlives a prompt we gave up on.
        self._config.set_property_by_name(
            "SpeechSynthesis_FirstChunkTimeoutMs", str(max(1, round(first_chunk_timeout_s * 1000)))
        )
        language = language or locale_of(voice)
        if language:
            self._config.speech_synthesis_language = language
        self.on_error: TextCallback | None = None
        self.voice = voice
        self.language = language
        self.first_chunk_timeout_s = first_chunk_timeout_s
        self.chunk_timeout_s = chunk_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.synthesizers_built = 0
        self._channel: _Channel | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureTextToSpeech:
        """Build from ``AZURE_SPEECH_*`` and ``AZURE_TTS_VOICE``; ProviderUnavailable without key or SDK."""
        return cls(**account_from_settings(settings), voice=settings.azure_tts_voice)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield mu-law chunks of ``text`` as the service sends them; raises ProviderError on any failure."""
        if self._closed:
            raise ProviderError(PROVIDER, "the synthesizer was closed; build a new one")
        if not text.strip():
            raise ProviderError(PROVIDER, "there is no text to speak")
        async with self._lock:
            channel = self._channel or self._open_channel()
            request = _Request()
            channel.request = request
            try:
                try:
                    request.future = channel.synthesizer.speak_text_async(text)  # returns at once
                except RuntimeError as exc:
                    raise ProviderError(PROVIDER, f"the Speech SDK refused the prompt: {exc}") from exc
                received = 0
                while True:
                    item = await self._next(request, received)
                    if isinstance(item, _End):
                        if item.error is not None:
                            raise item.error
                        if received == 0:
                            raise ProviderError(PROVIDER, "the service returned no audio", retryable=True)
                        return
                    received += len(item)
                    yield item
            finally:
                if not request.done.is_set():
                    await self._abort(channel, request)
                channel.request = None
                request.future = None

    async def aclose(self) -> None:
        """Release the synthesizer and its connection (bounded by ``stop_timeout_s``); idempotent."""
        if self._closed:
            return
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            busy = channel.request is not None
            try:
                await run_blocking(
                    lambda: channel.release(busy), timeout_s=self.stop_timeout_s, what="synthesizer release"
                )
            except Exception as exc:
                log.warning("Azure synthesizer did not close cleanly: %s: %s", type(exc).__name__, exc)

    # -- internals ---------------------------------------------------------------------------

    def _open_channel(self) -> _Channel:
        try:
            channel = _Channel(self._sdk, self._config, asyncio.get_running_loop())
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(PROVIDER, f"the Speech SDK could not build a synthesizer: {exc}") from exc
        self._channel = channel
        self.synthesizers_built += 1
        return channel

    async def _next(self, request: _Request, received: int) -> bytes | _End:
        timeout = self.first_chunk_timeout_s if received == 0 else self.chunk_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await request.queue.get()
        except TimeoutError:
            where = "no audio" if received == 0 else f"the audio stalled after {received} bytes"
            raise AzureSpeechError(
                PROVIDER,
                f"ServiceTimeout: {where} within {timeout:g} s (the SDK itself would wait 30-80 s); "
                "check AZURE_SPEECH_REGION / AZURE_SPEECH_ENDPOINT and the network",
                error_code="ServiceTimeout",
                retryable=True,
            ) from None

    async def _abort(self, channel: _Channel, request: _Request) -> None:
        """Stop the prompt and wait for the SDK to confirm; otherwise never reuse this synthesizer."""
        try:
            await run_blocking(
                lambda: channel.synthesizer.stop_speaking_async().get(),
                timeout_s=self.stop_timeout_s,
                what="synthesis stop",
            )
            async with asyncio.timeout(self.stop_timeout_s):
                await request.done.wait()
        except Exception as exc:  # a stop that failed or timed out: handled below
            log.debug("Azure synthesis stop: %s: %s", type(exc).__name__, exc)
        finally:
            if not request.done.is_set():
                self._retire(channel)

    def _retire(self, channel: _Channel) -> None:
        if self._channel is channel:
            self._channel = None
        channel.retired = True
        # Fire and forget: a daemon thread that ends when the SDK lets go (its own timeouts bound it).
        threading.Thread(
            target=_release_quietly, args=(channel,), name="voicefsm-azure-tts-release", daemon=True
        ).start()


def _release_quietly(channel: _Channel) -> None:
    try:
        channel.release(stop_first=True)
    except Exception as exc:
        log.debug("releasing an Azure synthesizer failed: %s: %s", type(exc).__name__, exc)
