"""Turn what a caller said (speech-to-text output or typed text) into lowercase words.

Every expectation parses from an :class:`Utterance`: ``raw`` keeps every word (so phrases such as
"please do" or "uh huh" still match), ``words`` drops fillers ("um", "I'd like", a trailing "please").
Tokens are lowercase words (``a-z`` and apostrophes) or digit tokens kept whole: ``12``, ``1st``,
``15:30``, ``2026-12-01``, ``3.5``; "3pm" splits into ``3`` and ``pm``, "p.m." becomes ``pm``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

_TOKEN = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}"  # ISO date
    r"|\d{1,2}:\d{2}"  # clock time
    r"|\d+(?:\.\d+)+"  # decimal: kept whole so "3.5" is never read as 3 or 35
    r"|\d+(?:st|nd|rd|th)\b"  # ordinal
    r"|\d+"
    r"|[a-z]+(?:'[a-z]+)*"
)
_AM_PM = re.compile(r"\b([ap])\.\s?m\b\.?")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")

T = TypeVar("T")

FILLER_WORDS = frozenset({"um", "umm", "uh", "uhh", "uhm", "er", "erm", "hmm", "hm", "mm", "ah", "like"})
FILLER_PHRASES: tuple[tuple[str, ...], ...] = (
    ("i'd", "like"),
    ("i", "would", "like"),
    ("i", "want"),
    ("let's", "say"),
    ("how", "about"),
    ("make", "it"),
)
# Politeness only counts as filler at either end: "please do" and "thank you" mid-sentence are kept.
EDGE_FILLERS: tuple[tuple[str, ...], ...] = (("please",), ("thanks",), ("thank", "you"))


@dataclass(frozen=True)
class Utterance:
    """One caller turn as tokens: ``raw`` has every word, ``words`` has the fillers dropped."""

    text: str
    raw: tuple[str, ...]
    words: tuple[str, ...]


def tokenize(text: str) -> tuple[str, ...]:
    """Lowercase ``text``, strip accents and punctuation, and split it into word and digit tokens."""
    folded = unicodedata.normalize("NFKD", text.replace("’", "'").replace("‘", "'"))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii").lower()
    ascii_text = _AM_PM.sub(r"\1m", ascii_text)
    ascii_text = _THOUSANDS_COMMA.sub("", ascii_text)
    return tuple(_TOKEN.findall(ascii_text))


def drop_fillers(tokens: Sequence[str]) -> tuple[str, ...]:
    """Remove filler words and phrases anywhere, and politeness at either end."""
    kept = list(tokens)
    for phrase in FILLER_PHRASES:
        kept = _remove_phrase(kept, phrase)
    kept = [token for token in kept if token not in FILLER_WORDS]
    changed = True
    while changed and kept:
        changed = False
        for phrase in EDGE_FILLERS:
            size = len(phrase)
            if tuple(kept[:size]) == phrase:
                kept, changed = kept[size:], True
            if tuple(kept[-size:]) == phrase:
                kept, changed = kept[:-size], True
    return tuple(kept)


def utterance(text: str) -> Utterance:
    """Tokenize ``text`` once for every parser."""
    raw = tokenize(text)
    return Utterance(text=text, raw=raw, words=drop_fillers(raw))


def find_phrase(tokens: Sequence[str], phrase: Sequence[str]) -> list[int]:
    """Start indexes where ``phrase`` occurs in ``tokens`` as whole words."""
    size = len(phrase)
    if size == 0:
        return []
    target = tuple(phrase)
    return [i for i in range(len(tokens) - size + 1) if tuple(tokens[i : i + size]) == target]


@dataclass(frozen=True)
class Match(Generic[T]):
    """A phrase found in an utterance: tokens ``start:end`` meant ``value``."""

    start: int
    end: int
    value: T


def longest_matches(matches: Iterable[Match[T]]) -> list[Match[T]]:
    """Keep the longest of overlapping matches (earliest first on a tie), in utterance order."""
    chosen: list[Match[T]] = []
    for match in sorted(matches, key=lambda m: (m.start - m.end, m.start)):
        if all(match.end <= other.start or match.start >= other.end for other in chosen):
            chosen.append(match)
    return sorted(chosen, key=lambda m: m.start)


def phrase_matches(tokens: Sequence[str], phrases: Iterable[tuple[tuple[str, ...], T]]) -> list[Match[T]]:
    """Every whole-word occurrence of each ``(phrase, value)`` pair, longest ones winning overlaps."""
    found = [
        Match(start, start + len(phrase), value)
        for phrase, value in phrases
        for start in find_phrase(tokens, phrase)
    ]
    return longest_matches(found)


def is_spoken_phrase(phrase: str) -> bool:
    """True when ``phrase`` is lowercase words separated by single spaces (what a grammar can hold)."""
    return re.fullmatch(r"[a-z']+(?: [a-z']+)*", phrase) is not None


def _remove_phrase(tokens: list[str], phrase: tuple[str, ...]) -> list[str]:
    size = len(phrase)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tuple(tokens[i : i + size]) == phrase:
            i += size
        else:
            out.append(tokens[i])
            i += 1
    return out
