"""Text-to-speech that holds under provider failures: a deadline on every request, one retry, a fallback.

:class:`ResilientTextToSpeech` implements the :class:`~voicefsm.providers.base.TextToSpeech`
protocol around a primary synthesizer, so the runtime needs no change. For each prompt it

1. asks the primary, with a deadline for the first audio and for each gap between chunks (local
   providers included: espeak-ng runs in a thread that can hang like any socket);
2. on a failure (a :class:`~voicefsm.errors.ProviderError`, a timeout, a network error, or no
   audio at all) asks the primary once more;
3. then asks the fallback provider (``VOICEFSM_TTS_FALLBACK``, e.g. ``local`` behind ElevenLabs
   or Azure), built the first time it is needed;
4. and only when all of them failed raises a ProviderError naming each failure, which the runtime
   turns into the flow's ``tts_error`` as before.

A provider that fails after some audio was sent is retried from the start of the prompt: the caller
hears the beginning twice rather than a prompt cut off in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

from voicefsm.errors import ProviderError
from voicefsm.observability.tracing import mark_error, start_span
from voicefsm.providers.base import TextCallback, TextToSpeech
from voicefsm.providers.registry import create_tts
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

#: How many times the primary is asked again after it failed, before the fallback.
RETRIES = 1

TtsFactory = Callable[[], TextToSpeech]
#: Told of each retry or fallback: ``(kind, provider)``, kind "retry" or "fallback" (for /metrics).
TtsEventCallback = Callable[[str, str], None]


class ResilientTextToSpeech:
    """A TextToSpeech that retries its primary once, then falls back, each request with a deadline."""

    def __init__(
        self,
        primary: TextToSpeech,
        fallback: TtsFactory | None = None,
        *,
        deadline_s: float = 8.0,
        retries: int = RETRIES,
        primary_name: str = "primary",
        fallback_name: str = "fallback",
        on_event: TtsEventCallback | None = None,
    ) -> None:
        self.primary = primary
        self._fallback_factory = fallback
        self._fallback: TextToSpeech | None = None
        self.deadline_s = deadline_s
        self.retries = retries
        self.primary_name = primary_name
        self.fallback_name = fallback_name
        self.on_error: TextCallback | None = None
        #: What happened, for tests and metrics: ("retry" | "fallback", reason) per event.
        self.events: list[tuple[str, str]] = []
        self.on_event = on_event
        self.name = getattr(primary, "name", primary_name)

    def _attempts(self) -> list[tuple[str, Callable[[], TextToSpeech]]]:
        attempts: list[tuple[str, Callable[[], TextToSpeech]]] = [
            (self.primary_name, lambda: self.primary) for _ in range(1 + self.retries)
        ]
        if self._fallback_factory is not None:
            attempts.append((self.fallback_name, self._fallback_provider))
        return attempts

    def _fallback_provider(self) -> TextToSpeech:
        if self._fallback is None:
            assert self._fallback_factory is not None
            self._fallback = self._fallback_factory()
        return self._fallback

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        failures: list[str] = []
        attempts = self._attempts()
        # One trace span per prompt (not made current: it would leak across the yields into the caller).
        request = start_span("voicefsm.tts", provider=self.primary_name, chars=len(text))
        try:
            for number, (name, provider) in enumerate(attempts):
                try:
                    async with contextlib.aclosing(self._within_deadlines(provider(), text)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                    request.set_attribute("voicefsm.attempts", number + 1)
                    request.set_attribute("voicefsm.spoken_by", name)
                    return
                except (ProviderError, TimeoutError, OSError) as exc:
                    reason = _reason(exc, self.deadline_s)
                    failures.append(f"{name}: {reason}")
                    if number + 1 < len(attempts):
                        kind = "retry" if attempts[number + 1][0] == name else "fallback"
                        self.events.append((kind, reason))
                        if self.on_event is not None:
                            self.on_event(kind, attempts[number + 1][0])
                        log.warning(
                            "TTS %s failed (%s); %s", name, reason, _next(kind, attempts[number + 1][0])
                        )
            request.set_attribute("voicefsm.attempts", len(attempts))
            mark_error(request, "every synthesizer failed")
            raise ProviderError("tts", "; ".join(failures) or "no synthesizer")
        finally:
            request.end()

    async def _within_deadlines(self, provider: TextToSpeech, text: str) -> AsyncGenerator[bytes, None]:
        """The provider's chunks, each awaited for at most ``deadline_s``; no audio at all is a failure."""
        produced = 0
        gaps = _GapDeadline(self.deadline_s)
        try:
            async with contextlib.aclosing(provider.synthesize(text)) as chunks:
                iterator = aiter(chunks)
                while True:
                    gaps.waiting()
                    try:
                        chunk = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        gaps.raise_if_expired()
                        raise
                    gaps.received()
                    produced += len(chunk)
                    yield chunk
        finally:
            gaps.stop()
        if produced == 0:
            raise ProviderError("tts", "the synthesizer produced no audio")

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            if self._fallback is not None:
                await self._fallback.aclose()


class _GapDeadline:
    """A deadline on each wait for the next chunk, at the cost of two assignments per chunk.

    ``asyncio.timeout`` per chunk made a timer, a heap entry and a context per chunk (a prompt is
    dozens of chunks, each call several prompts). Here one timer per prompt looks at the wait under
    way when it fires and re-arms for that wait's own deadline; only a wait that has lasted
    ``deadline_s`` cancels the task, which :meth:`raise_if_expired` turns into a TimeoutError, as
    ``asyncio.timeout`` does. The time the consumer spends between chunks never counts, and the
    timer never fires into the consumer's code: it cancels only while a wait is under way, and the
    wait is the task's next step even when its chunk arrived in the same loop iteration.
    """

    __slots__ = ("_cancelling", "_deadline_s", "_expired", "_loop", "_task", "_timer", "_waiting_since")

    def __init__(self, deadline_s: float) -> None:
        self._deadline_s = deadline_s
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._waiting_since: float | None = None
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        """A wait for the next chunk starts now (in the task that consumes the stream now)."""
        task = asyncio.current_task()
        if task is not self._task:
            assert task is not None, "a TTS stream is consumed by a task"
            self._task, self._cancelling = task, task.cancelling()
        now = self._loop.time()
        self._waiting_since = now
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._deadline_s, self._check)

    def received(self) -> None:
        self._waiting_since = None

    def raise_if_expired(self) -> None:
        """Called with the wait's CancelledError: raise TimeoutError if the deadline caused it."""
        if self._expired and self._task is not None and self._task.uncancel() <= self._cancelling:
            raise TimeoutError

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        since = self._waiting_since
        now = self._loop.time()
        if since is None:  # between chunks: whatever wait comes next has its whole deadline
            self._timer = None
        elif now - since >= self._deadline_s and self._task is not None:
            self._timer = None
            self._expired = True
            self._task.cancel()
        else:
            self._timer = self._loop.call_at(since + self._deadline_s, self._check)


def _reason(exc: BaseException, deadline_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no audio within {deadline_s:g} s"
    if isinstance(exc, ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _next(kind: str, name: str) -> str:
    return "asking it once more" if kind == "retry" else f"falling back to {name}"


def resilient_tts(
    name: str,
    settings: Settings,
    *,
    primary: TextToSpeech | None = None,
    on_event: TtsEventCallback | None = None,
) -> TextToSpeech:
    """The TTS for one call: provider ``name`` with a deadline, one retry, and VOICEFSM_TTS_FALLBACK.

    ``primary`` is provider ``name`` already built (e.g. behind the prompt cache); by default it is made
    here. ``on_event`` is told of each retry and fallback (the server counts them in ``/metrics``).
    """
    fallback_name = settings.tts_fallback
    fallback: TtsFactory | None = None
    if fallback_name and fallback_name != name:

        def fallback() -> TextToSpeech:
            return create_tts(fallback_name, settings)

    return ResilientTextToSpeech(
        primary if primary is not None else create_tts(name, settings),
        fallback,
        deadline_s=settings.tts_deadline_s,
        primary_name=name,
        fallback_name=fallback_name or "fallback",
        on_event=on_event,
    )
