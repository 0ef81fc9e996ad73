"""The expectation interface: parse results, keypad collection rules, errors."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from voicefsm.errors import VoiceFsmError
from voicefsm.flow.expect_numbers import parse_cardinal

MAX_HINTS = 50  # cloud STT phrase lists are short; longer ones cost latency and dilute the bias
DTMF_KEY = re.compile(r"[0-9*#]+")


class ExpectationError(VoiceFsmError):
    """An expectation was declared wrongly."""


class InvalidExpectationError(ExpectationError, ValueError):
    """An expectation's parameters make no sense (``kind`` says which, ``problem`` what, ``fix`` how)."""

    def __init__(self, kind: str, problem: str, fix: str) -> None:
        super().__init__(kind, problem, fix)
        self.kind = kind
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.kind} expectation: {self.problem}; {self.fix}"


def check_key(kind: str, key: str) -> None:
    """Raise unless ``key`` is keypad input (digits, ``*``, ``#``)."""
    if not isinstance(key, str) or not DTMF_KEY.fullmatch(key):
        raise InvalidExpectationError(kind, f"key {key!r} is not keypad input", "use digits, * and #")


class UnsupportedSlotTypeError(ExpectationError, TypeError):
    """No expectation is known for a slot's type annotation."""

    def __init__(self, annotation: object, detail: str = "") -> None:
        super().__init__(annotation, detail)
        self.annotation = annotation
        self.detail = detail

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"no expectation is known for slot type {self.annotation!r}{detail}; declare one explicitly, "
            "e.g. Ask(..., expect=Digits(4, 8)) or annotate the slot as Annotated[str, Digits(4, 8)]"
        )


@dataclass(frozen=True)
class Parsed:
    """The caller's input was understood: ``value`` goes into the slot, ``text`` is what they said."""

    value: object
    text: str


@dataclass(frozen=True)
class NoMatch:
    """The input did not fit; ``reason`` is short human text usable in a reprompt."""

    reason: str
    text: str


ParseResult = Parsed | NoMatch


@dataclass(frozen=True)
class Keypad:
    """How to collect keypad input: stop after ``max_digits`` keys or at ``terminator`` (0 = no keypad)."""

    max_digits: int
    terminator: str | None = None


class Expectation(ABC):
    """What one listening state accepts, by voice and by keypad."""

    kind: ClassVar[str]

    @abstractmethod
    def parse_text(self, text: str, *, today: date) -> ParseResult:
        """Parse speech-to-text output (or typed text)."""

    @abstractmethod
    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        """Parse keypad digits such as ``"1"`` or ``"1234#"``."""

    @abstractmethod
    def phrases(self) -> tuple[str, ...]:
        """Every phrase a caller may say, as lowercase words: the alternatives of a recognizer grammar."""

    def grammar_phrases(self) -> tuple[str, ...]:
        """The phrases a closed-grammar recognizer listens for: :meth:`phrases`, or its common core
        where the full list is so long that such a recognizer would confuse its entries."""
        return self.phrases()

    @abstractmethod
    def examples(self) -> tuple[str, ...]:
        """A few utterances that parse, for generated tests."""

    @abstractmethod
    def counter_examples(self) -> tuple[str, ...]:
        """A few utterances that must not parse, for no-match and fault runs."""

    @abstractmethod
    def dtmf_examples(self) -> tuple[str, ...]:
        """A few keypad inputs that parse."""

    @abstractmethod
    def describe(self) -> str:
        """What is expected, in words, with the keypad alternative."""

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-able description: ``kind`` plus the constructor's parameters."""

    @abstractmethod
    def keypad(self) -> Keypad:
        """How keypad input for this expectation is collected."""

    def open_vocabulary(self) -> bool:
        """True when free text is acceptable, so no closed grammar can be built."""
        return False

    def repeatable(self) -> bool:
        """True when an answer is one or more :meth:`phrases` in a row (grammar ``<phrase>+``)."""
        return False

    def hints(self) -> tuple[str, ...]:
        """Short phrase list for cloud speech-to-text biasing (at most a few dozen entries)."""
        return self.phrases()[:MAX_HINTS]

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        """A few keypad inputs that must not parse."""
        return ("", "*")


def spoken_key(words: Sequence[str]) -> str | None:
    """The keypad key a caller said aloud ("one", "2", "star"), when that is all they said."""
    if len(words) == 1 and words[0] in ("star", "pound", "hash"):
        return "*" if words[0] == "star" else "#"
    value = parse_cardinal(words) if words else None
    return str(value) if value is not None and value < 10 else None
