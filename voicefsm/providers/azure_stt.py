"""Azure Speech continuous recognition, fed the caller's 8 kHz mu-law frames through a push stream.

One SDK recognizer per call. A *feeder* task writes each frame from the call's queue into a
``PushAudioInputStream`` (declared as 8 kHz, 8-bit, mono mu-law, so nothing is transcoded);
``None`` in the queue closes the stream, which ends recognition. The SDK reports on its own
threads; every report is moved onto the event loop (``loop.call_soon_threadsafe``) before a
callback sees it.

Failures: the SDK reconnects by itself after a dropped socket (a single close 1011 costs the
utterance in progress, nothing more); after about five failed attempts, or a refused handshake,
it gives up with a ``canceled`` event, which becomes one
:class:`~voicefsm.providers.azure.AzureSpeechError` through ``on_error``. It does *not* give up
against a service that accepts TCP and never answers: that costs a minute of silence. So a
*watchdog* task watches the SDK's ``Connection`` events: no connection within
``connect_timeout_s`` of starting, or no reconnection within ``connect_timeout_s`` of losing
one, is reported as an error. Optionally (``result_timeout_s``) a connected service that sends
nothing at all (no speech start, partial, final or NoMatch) for that long is reported too; it
is off by default because a real service may stay quiet while the caller is.

Echo discard, the one-start rule and the idempotent stop come from
:class:`~voicefsm.providers.streaming.StreamingRecognizer`.

Hints become the recognizer's phrase list: it biases recognition towards the expected phrases
but cannot restrict it, so ``open_vocabulary=False`` is honoured by the flow's parser, not here.
The service takes phrase-list changes at its next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from voicefsm.errors import ProviderError
from voicefsm.providers.azure import (
    AzureSpeechError,
    account_from_settings,
    cancellation_error,
    import_sdk,
    run_blocking,
    speech_config,
)
from voicefsm.providers.base import RecognitionHints
from voicefsm.providers.streaming import StreamingRecognizer

if TYPE_CHECKING:
    from voicefsm.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "azure-stt"
SAMPLE_RATE = 8000
MAX_PHRASES = 500  # the service's phrase-list limit


class AzureSpeechToText(StreamingRecognizer):
    """A SpeechToText on Azure continuous recognition, with a connection watchdog and echo discard."""

    name = "azure"
    provider = PROVIDER

    def __init__(
        self,
        *,
        key: str,
        region: str | None = None,
        host: str | None = None,
        endpoint: str | None = None,
        language: str = "en-US",
        silence_timeout_ms: int = 800,
        phrases: Sequence[str] = (),
        echo_window_s: float = 0.4,
        discard_partials_while_speaking: bool = False,
        connect_timeout_s: float = 5.0,
        result_timeout_s: float | None = None,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            echo_window_s=echo_window_s,
            discard_partials_while_speaking=discard_partials_while_speaking,
            clock=clock,
        )
        self._sdk = import_sdk(PROVIDER)
        self._config = speech_config(
            self._sdk, PROVIDER, key=key, region=region, host=host, endpoint=endpoint
        )
        self._config.speech_recognition_language = language
        self._config.set_property(
            self._sdk.PropertyId.Speech_SegmentationSilenceTimeoutMs, str(int(silence_timeout_ms))
        )
        # Not in the SDK's PropertyId enum, but honoured: without it a stop against a dead service
        # holds its thread for 10 s after stop() has given up on it.
        self._config.set_property_by_name(
            "SPEECH-StopRecognitionTimeoutInSeconds", str(max(1, math.ceil(stop_timeout_s)))
        )
        self.language = language
        self.silence_timeout_ms = silence_timeout_ms
        self.phrases = tuple(phrases)
        self.connect_timeout_s = connect_timeout_s
        self.result_timeout_s = result_timeout_s
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s

        self.connected = False
        self.connections = 0  # how many times the SDK (re)connected
        self.frames_sent = 0

        self._hints = RecognitionHints()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The starting call's context (its SID for log lines): SDK reports run in it on the loop.
        self._context: contextvars.Context | None = None
        self._recognizer: Any = None
        self._push: Any = None
        self._connection: Any = None
        self._phrase_list: Any = None
        self._audio_ended = False
        self._changed = asyncio.Event()  # wakes the watchdog
        self._lost_at = 0.0  # when the connection was last missing (start or disconnect)
        self._heard_at = 0.0  # when the service last said anything

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureSpeechToText:
        """Build from ``AZURE_SPEECH_*``, ``AZURE_STT_LANGUAGE`` and ``AZURE_SILENCE_TIMEOUT_MS``."""
        return cls(
            **account_from_settings(settings),
            language=settings.azure_stt_language,
            silence_timeout_ms=settings.azure_silence_timeout_ms,
        )

    # -- the SpeechToText protocol --------------------------------------------------------

    def set_hints(self, hints: RecognitionHints) -> None:
        """Bias recognition towards ``hints.phrases`` (the service applies them from its next turn)."""
        self._hints = hints
        if self._phrase_list is not None and not self._stopping:
            self._apply_phrases()

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        """Start continuous recognition and the feeder; raises ProviderError if the SDK cannot start."""
        self._begin()
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        try:
            self._build()
        except (RuntimeError, ValueError) as exc:
            await self.stop()
            raise ProviderError(PROVIDER, f"the Speech SDK could not build a recognizer: {exc}") from exc
        self._lost_at = self._heard_at = self._clock()
        self._spawn(self._watch(), name="azure-stt-watchdog")
        recognizer = self._recognizer
        try:
            started = await run_blocking(
                lambda: recognizer.start_continuous_recognition_async().get(),
                timeout_s=self.start_timeout_s,
                what="recognition start",
            )
        except Exception as exc:
            await self.stop()
            raise ProviderError(PROVIDER, f"recognition did not start: {type(exc).__name__}: {exc}") from exc
        if not started:
            await self.stop()
            raise ProviderError(
                PROVIDER, f"recognition did not start within {self.start_timeout_s:g} s", retryable=True
            )
        if self._stopping:  # stop() ran while the SDK was starting: it must not find a new task after
            return
        self._spawn(self._feed(audio), name="azure-stt-feeder")

    async def _release(self) -> None:
        """After the tasks: close the audio, stop recognition within ``stop_timeout_s``."""
        self._close_push()
        await self._shutdown_sdk()

    # -- properties for tests and metrics --------------------------------------------------

    @property
    def running(self) -> bool:
        """True from start() until recognition ends (failure, end of audio, or stop())."""
        return self._started and not self.finished.is_set()

    @property
    def active_phrases(self) -> tuple[str, ...]:
        """The phrases the recognizer's phrase list holds (constructor phrases, then hints)."""
        seen: dict[str, None] = {}
        for phrase in (*self.phrases, *self._hints.phrases):
            phrase = " ".join(phrase.split())
            if phrase:
                seen[phrase] = None
        return tuple(seen)[:MAX_PHRASES]

    # -- the SDK objects --------------------------------------------------------------------

    def _build(self) -> None:
        sdk = self._sdk
        stream_format = sdk.audio.AudioStreamFormat(
            samples_per_second=SAMPLE_RATE,
            bits_per_sample=8,
            channels=1,
            wave_stream_format=sdk.audio.AudioStreamWaveFormat.MULAW,
        )
        self._push = sdk.audio.PushAudioInputStream(stream_format=stream_format)
        recognizer = sdk.SpeechRecognizer(
            speech_config=self._config, audio_config=sdk.audio.AudioConfig(stream=self._push)
        )
        self._recognizer = recognizer
        self._connection = sdk.Connection.from_recognizer(recognizer)
        self._phrase_list = sdk.PhraseListGrammar.from_recognizer(recognizer)
        self._apply_phrases()
        # These run on SDK threads: read the event there, handle it on the loop.
        recognizer.recognizing.connect(self._sdk_recognizing)
        recognizer.recognized.connect(self._sdk_recognized)
        recognizer.canceled.connect(self._sdk_canceled)
        recognizer.speech_start_detected.connect(self._sdk_activity)
        recognizer.session_stopped.connect(self._sdk_session_stopped)
        self._connection.connected.connect(self._sdk_connected)
        self._connection.disconnected.connect(self._sdk_disconnected)

    def _apply_phrases(self) -> None:
        phrase_list = self._phrase_list
        try:
            phrase_list.clear()
            for phrase in self.active_phrases:
                phrase_list.addPhrase(phrase)
        except RuntimeError as exc:  # hints are an optimisation: never fail a call over them
            log.warning("Azure phrase list could not be updated: %s", exc)

    def _close_push(self) -> None:
        if self._push is not None and not self._audio_ended:
            self._audio_ended = True
            self._changed.set()
            try:
                self._push.close()
            except RuntimeError as exc:
                log.debug("closing the Azure push stream failed: %s", exc)

    async def _shutdown_sdk(self) -> None:
        recognizer, connection = self._recognizer, self._connection
        self._recognizer = self._connection = self._phrase_list = self._push = None
        if recognizer is None:
            return

        def shutdown() -> None:
            # Runs in its own thread: against a dead service stop takes ~10 s, and the native
            # destructors run here too, when this thread drops the last references.
            try:
                recognizer.stop_continuous_recognition_async().get()
                with contextlib.suppress(RuntimeError):  # already closed by the service
                    connection.close()
            finally:
                for signal in (
                    recognizer.recognizing,
                    recognizer.recognized,
                    recognizer.canceled,
                    recognizer.speech_start_detected,
                    recognizer.session_stopped,
                    connection.connected,
                    connection.disconnected,
                ):
                    signal.disconnect_all()

        try:
            await run_blocking(shutdown, timeout_s=self.stop_timeout_s, what="recognition stop")
        except Exception as exc:
            log.warning("Azure recognition did not stop cleanly: %s: %s", type(exc).__name__, exc)

    # -- audio in ---------------------------------------------------------------------------

    async def _feed(self, audio: asyncio.Queue[bytes | None]) -> None:
        push = self._push
        while (frame := await audio.get()) is not None:
            # After a failure the call may keep sending audio; drain it rather than fill the SDK's buffer.
            if self.error is None and frame:
                push.write(frame)  # copies into the SDK's buffer; never waits on the network
                self.frames_sent += 1
        self._close_push()

    # -- the watchdog ------------------------------------------------------------------------

    async def _watch(self) -> None:
        while not (self._audio_ended or self.finished.is_set()):
            self._changed.clear()
            now = self._clock()
            if not self.connected:
                remaining = self._lost_at + self.connect_timeout_s - now
                if remaining <= 0:
                    what = "no connection to" if self.connections == 0 else "lost the connection to"
                    self._fail(
                        AzureSpeechError(
                            PROVIDER,
                            f"ServiceTimeout: {what} the service for {self.connect_timeout_s:g} s "
                            "(the SDK itself would keep trying for about a minute); check "
                            "AZURE_SPEECH_REGION, AZURE_SPEECH_HOST or AZURE_SPEECH_ENDPOINT and the network",
                            error_code="ServiceTimeout",
                            retryable=True,
                        )
                    )
                    return
            elif self.result_timeout_s is not None:
                remaining = self._heard_at + self.result_timeout_s - now
                if remaining <= 0:
                    self._fail(
                        AzureSpeechError(
                            PROVIDER,
                            "ServiceTimeout: connected, but the service sent nothing for "
                            f"{self.result_timeout_s:g} s",
                            error_code="ServiceTimeout",
                            retryable=True,
                        )
                    )
                    return
            else:
                remaining = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    # -- SDK callbacks: on SDK threads, so they only copy data and hand it to the loop ------

    def _post(self, handler: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
            loop.call_soon_threadsafe(handler, *args, context=self._context)

    def _sdk_recognizing(self, event: Any) -> None:
        self._post(self._on_partial, event.result.text)

    def _sdk_recognized(self, event: Any) -> None:
        result = event.result
        if result.reason == self._sdk.ResultReason.RecognizedSpeech:
            self._post(self._on_final, result.text)
        else:  # NoMatch: the service is alive but heard nothing it could transcribe
            self._post(self._on_activity)

    def _sdk_canceled(self, event: Any) -> None:
        details = event.cancellation_details
        self._post(self._on_canceled, details.reason.name, details.code.name, details.error_details or "")

    def _sdk_activity(self, event: Any) -> None:
        self._post(self._on_activity)

    def _sdk_session_stopped(self, event: Any) -> None:
        self._post(self._on_session_stopped)

    def _sdk_connected(self, event: Any) -> None:
        self._post(self._on_connection, True)

    def _sdk_disconnected(self, event: Any) -> None:
        self._post(self._on_connection, False)

    # -- the same events, on the loop --------------------------------------------------------

    def _on_activity(self) -> None:
        self._heard_at = self._clock()
        self._changed.set()

    def _on_connection(self, connected: bool) -> None:
        if connected:
            self.connections += 1
            self._heard_at = self._clock()
        else:
            self._lost_at = self._clock()
        self.connected = connected
        self._changed.set()

    def _on_partial(self, text: str) -> None:
        self._on_activity()
        self._heard_partial(text)

    def _on_final(self, text: str) -> None:
        self._on_activity()
        self._heard_final(text)

    def _on_canceled(self, reason: str, code: str, details: str) -> None:
        if reason == "Error" and not self._audio_ended:
            self._fail(cancellation_error(PROVIDER, code, details))
        elif reason == "EndOfStream":
            self.finished.set()
            self._changed.set()

    def _on_session_stopped(self) -> None:
        if self._audio_ended:
            self.finished.set()

    def _fail(self, error: ProviderError) -> None:
        super()._fail(error)
        self._changed.set()  # the watchdog has nothing left to watch
