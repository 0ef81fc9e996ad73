"""The two small protocols every speech provider implements.

Audio is always 8 kHz G.711 mu-law, the format phone calls carry, so nothing on the
call's hot path resamples unless a provider needs to.

Callbacks (``on_committed``, ``on_recognizing``, ``on_error``) are invoked on the event
loop's thread: a provider whose SDK calls back on its own threads marshals with
``loop.call_soon_threadsafe`` before calling them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

TextCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RecognitionHints:
    """What the current listening state expects, so a recognizer can constrain or bias itself.

    ``phrases`` are every lowercase word sequence a caller may say (for a closed grammar);
    ``open_vocabulary`` is true when free text is acceptable too (no closed grammar then);
    ``repeatable`` means a caller says one or more of the phrases in a row (digits, numbers);
    ``keyterms`` is a short list (at most 50) of the most telling phrases, for cloud recognizers.
    """

    phrases: tuple[str, ...] = ()
    open_vocabulary: bool = True
    repeatable: bool = False
    keyterms: tuple[str, ...] = ()


@runtime_checkable
class SpeechToText(Protocol):
    """One recognizer per call. It reads mu-law frames from a queue until it is stopped.

    ``start`` returns once recognition runs; ``stop`` cancels and awaits everything the
    recognizer owns (tasks, sockets, SDK sessions) and is safe to call twice. Failures
    that retrying cannot mend are reported once through ``on_error``.
    """

    on_committed: TextCallback | None
    on_recognizing: TextCallback | None
    on_error: TextCallback | None

    def set_speaking(self, speaking: bool) -> None:
        """The agent starts or stops talking: open or close the echo-discard window."""

    def set_hints(self, hints: RecognitionHints) -> None:
        """What the caller is expected to say next; providers that cannot use hints ignore them."""

    async def start(self, audio: asyncio.Queue[bytes | None]) -> None:
        """Start recognising frames taken from ``audio``; ``None`` in the queue means end of audio."""

    async def stop(self) -> None:
        """Stop and release everything; idempotent."""


@runtime_checkable
class TextToSpeech(Protocol):
    """Turns text into 8 kHz mu-law audio, streamed as it is produced.

    ``synthesize`` raises :class:`voicefsm.errors.ProviderError` on failure; the runtime
    reports it through ``on_error`` and as a ``tts_error`` event. Cancelling the iteration
    (barge-in, hang-up) must stop synthesis promptly and release its connection.
    """

    on_error: TextCallback | None

    def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield mu-law audio chunks for ``text``."""
        ...

    async def aclose(self) -> None:
        """Release clients and sessions; idempotent."""


def _normalised(phrases: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for phrase in phrases:
        words = " ".join(phrase.lower().split())
        if words:
            seen[words] = None
    return tuple(seen)


def hints_from_phrases(
    phrases: Sequence[str],
    *,
    open_vocabulary: bool,
    repeatable: bool = False,
    keyterms: Sequence[str] = (),
) -> RecognitionHints:
    """Normalise phrase lists into hints (lowercase, deduplicated, order kept)."""
    return RecognitionHints(_normalised(phrases), open_vocabulary, repeatable, _normalised(keyterms)[:50])
