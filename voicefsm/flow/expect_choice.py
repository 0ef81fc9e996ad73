"""Expectations for menus of choices and for free text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from voicefsm.flow.expect_base import (
    Expectation,
    InvalidExpectationError,
    Keypad,
    NoMatch,
    Parsed,
    ParseResult,
    check_key,
    spoken_key,
)
from voicefsm.flow.expect_numbers import (
    cardinal_words,
    is_digit_token,
    ordinal_words,
    parse_ordinal,
)
from voicefsm.flow.expect_text import Match, is_spoken_phrase, phrase_matches, tokenize, utterance

# -------------------------------------------------------------------------------------------- choice

_GARBAGE = ("something else entirely", "banana", "what", "the weather is nice")
_NEGATIONS = frozenset({"not", "don't", "dont", "never"})
_KEY_WORDS = frozenset({"option", "number", "press", "pressing", "key"})


@dataclass(frozen=True, init=False)
class Choice(Expectation):
    """One of several options; a canonical value is matched by itself or any of its synonyms.

    Options are found as whole words inside longer utterances ("I'd like to talk to billing please");
    a mention right after "not" is ignored; two different options mean no match. ``keys`` map keypad
    keys to values (default "1", "2", ... "0" in declaration order; more than 10 options get no
    default keys). Saying a key ("one", "option two") also works when no option was named.
    """

    options: tuple[tuple[str, tuple[str, ...]], ...]
    keys: tuple[tuple[str, str], ...]
    kind: ClassVar[str] = "choice"

    def __init__(
        self,
        options: Mapping[str, Sequence[str]] | Sequence[str],
        keys: Mapping[str, str] | None = None,
    ) -> None:
        normalized = _choice_options(options)
        object.__setattr__(self, "options", normalized)
        object.__setattr__(self, "keys", _choice_keys(normalized, keys))
        # Built once (and so checked at declaration time); not a field, so eq/hash/repr ignore it.
        object.__setattr__(self, "_phrase_table", self._build_table())

    def values(self) -> tuple[str, ...]:
        """The canonical values, in declaration order."""
        return tuple(value for value, _ in self.options)

    def _table(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        table: tuple[tuple[tuple[str, ...], str], ...] = self._phrase_table  # type: ignore[attr-defined]
        return table

    def _build_table(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        table: dict[tuple[str, ...], str] = {}
        for value, synonyms in self.options:
            for phrase in (value, *synonyms):
                tokens = tokenize(phrase)
                if not tokens:
                    raise InvalidExpectationError(
                        self.kind, f"option phrase {phrase!r} has no words a caller could say", "use words"
                    )
                spoken = _spoken_form(tokens)  # "2 bedrooms" is also said "two bedrooms"
                for form in dict.fromkeys((tokens, tuple(spoken.split()) if spoken else tokens)):
                    if table.get(form, value) != value:
                        raise InvalidExpectationError(
                            self.kind,
                            f"{phrase!r} would mean both {table[form]!r} and {value!r}",
                            "give each phrase to one option only",
                        )
                    table[form] = value
        return tuple(table.items())

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        said = utterance(text)
        matches = [m for m in phrase_matches(said.raw, self._table()) if not _negated(said.raw, m)]
        heard = list(dict.fromkeys(m.value for m in matches))
        if len(heard) == 1:
            return Parsed(heard[0], text)
        if heard:
            return NoMatch(f"I heard both {_either(heard, 'and')}", text)
        key = spoken_key([w for w in said.words if w not in _KEY_WORDS])
        if key is not None and key in dict(self.keys):
            return Parsed(dict(self.keys)[key], text)
        return NoMatch(f"I didn't catch {_either(list(self.values()), 'or')}", text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        keys = dict(self.keys)
        for typed in (digits, digits.removesuffix("#")):
            if typed in keys:
                return Parsed(keys[typed], digits)
        menu = ", ".join(f"{key} for {value}" for key, value in self.keys)
        return NoMatch(f"press {menu}" if menu else "please say it; the keypad can't be used here", digits)

    def phrases(self) -> tuple[str, ...]:
        spoken = (_spoken_form(phrase) for phrase, _ in self._table())
        return tuple(dict.fromkeys(p for p in spoken if p))

    def examples(self) -> tuple[str, ...]:
        out: list[str] = []
        for value, synonyms in self.options:
            out += [value, *synonyms[:1]]
        out.append(f"Um, I'd like {self.options[0][0]}, please.")
        return tuple(dict.fromkeys(out))

    def counter_examples(self) -> tuple[str, ...]:
        known = {word for phrase, _ in self._table() for word in phrase}
        out = [""] + [g for g in _GARBAGE if not known & set(tokenize(g))]
        if len(self.options) > 1:
            out.append(f"{self.options[0][0]} or {self.options[1][0]}")
        return tuple(out)

    def dtmf_examples(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.keys)

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        unused = [k for k in "0123456789*" if k not in dict(self.keys)]
        return ("", *unused[:2])

    def describe(self) -> str:
        menu = ", ".join(f"{key} = {value}" for key, value in self.keys)
        return _either(list(self.values()), "or") + (f" (keypad: {menu})" if menu else "")

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "options": {value: list(synonyms) for value, synonyms in self.options},
            "keys": dict(self.keys),
        }

    def keypad(self) -> Keypad:
        longest = max((len(key) for key, _ in self.keys), default=0)
        return Keypad(longest, "#" if longest > 1 else None)


def _choice_options(
    options: Mapping[str, Sequence[str]] | Sequence[str],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if isinstance(options, str):
        problem = f"options is the single string {options!r}"
        raise InvalidExpectationError("choice", problem, "pass a list of options")
    pairs = (
        [(value, tuple(synonyms)) for value, synonyms in options.items()]
        if isinstance(options, Mapping)
        else [(value, ()) for value in options]
    )
    if not pairs:
        raise InvalidExpectationError("choice", "no options", "give at least one option")
    for value, synonyms in pairs:
        if not isinstance(value, str) or any(not isinstance(s, str) for s in synonyms):
            raise InvalidExpectationError(
                "choice", f"option {value!r} has a value or synonym that is not a str", "use strings"
            )
        if isinstance(options, Mapping) and isinstance(options[value], str):
            raise InvalidExpectationError(
                "choice", f"synonyms of {value!r} are the single string {options[value]!r}", "use a list"
            )
    return tuple(pairs)


def _choice_keys(
    options: tuple[tuple[str, tuple[str, ...]], ...], keys: Mapping[str, str] | None
) -> tuple[tuple[str, str], ...]:
    values = [value for value, _ in options]
    if keys is None:
        return tuple(zip("1234567890", values, strict=False)) if len(values) <= 10 else ()
    for key, value in keys.items():
        check_key("choice", key)
        if value not in values:
            problem = f"key {key!r} points to unknown option {value!r}"
            raise InvalidExpectationError("choice", problem, f"use one of {values}")
    return tuple(keys.items())


def _negated(tokens: Sequence[str], match: Match[str]) -> bool:
    return match.start > 0 and tokens[match.start - 1] in _NEGATIONS


def _either(items: list[str], conjunction: str) -> str:
    if len(items) <= 2:
        return f" {conjunction} ".join(items)
    return ", ".join(items[:-1]) + f" {conjunction} {items[-1]}"


def _spoken_form(tokens: Sequence[str]) -> str | None:
    """``tokens`` as lowercase words a recognizer can hold: digits spelled out, or None if impossible."""
    out: list[str] = []
    for token in tokens:
        if is_spoken_phrase(token):
            out.append(token)
        elif is_digit_token(token) and int(token) <= 999_999:
            out.append(cardinal_words(int(token)))
        elif (ordinal := parse_ordinal([token])) is not None and 1 <= ordinal <= 59:
            out.append(ordinal_words(ordinal))
        else:
            return None
    return " ".join(out)


# ----------------------------------------------------------------------------------------- free text


@dataclass(frozen=True)
class FreeText(Expectation):
    """Anything with at least ``min_words`` words (fillers not counted); the value is the text as said."""

    min_words: int = 1
    kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if self.min_words < 1:
            raise InvalidExpectationError(self.kind, f"min_words is {self.min_words}", "use 1 or more")

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        words = utterance(text).words
        if not words:
            return NoMatch("I didn't hear anything", text)
        if len(words) < self.min_words:
            return NoMatch("could you say a bit more", text)
        return Parsed(" ".join(text.split()), text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        return NoMatch("please say it; the keypad can't be used here", digits)

    def phrases(self) -> tuple[str, ...]:
        return ()

    def open_vocabulary(self) -> bool:
        return True

    def examples(self) -> tuple[str, ...]:
        sentence = "I'd like to change the address on my account"
        while len(utterance(sentence).words) < self.min_words:
            sentence += " and my phone number too"
        return (sentence, "Hello, this is Sam" if self.min_words <= 3 else sentence + ".")

    def counter_examples(self) -> tuple[str, ...]:
        return ("", "   ", "um, uh", *(("yes",) if self.min_words > 1 else ()))

    def dtmf_examples(self) -> tuple[str, ...]:
        return ()

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        return ("1", "123#")

    def describe(self) -> str:
        least = f"at least {self.min_words} words" if self.min_words > 1 else "anything"
        return f"{least} (no keypad)"

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "min_words": self.min_words}

    def keypad(self) -> Keypad:
        return Keypad(0)
