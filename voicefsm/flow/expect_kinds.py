"""Expectations for yes/no, numbers, digit strings, days and times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import Any, ClassVar

from voicefsm.flow.expect_base import (
    MAX_HINTS,
    Expectation,
    InvalidExpectationError,
    Keypad,
    NoMatch,
    Parsed,
    ParseResult,
    check_key,
    spoken_key,
)
from voicefsm.flow.expect_dates import (
    WEEKDAYS,
    Problem,
    day_phrases,
    next_weekday,
    parse_day,
    parse_time,
    time_phrases,
)
from voicefsm.flow.expect_numbers import (
    DIGIT_HOMOPHONES,
    NUMBER_WORDS,
    cardinal_variants,
    cardinal_words,
    digit_words,
    is_digit_token,
    number_spans,
    parse_cardinal,
    spoken_digits,
)
from voicefsm.flow.expect_text import phrase_matches, utterance

# ------------------------------------------------------------------------------------------- yes / no

_YES = (
    "yes", "yeah", "yep", "yup", "ya", "sure", "correct", "that's correct", "that's right", "that is right",
    "right", "ok", "okay", "please do", "absolutely", "affirmative", "uh huh", "of course", "definitely",
    "go ahead", "sounds good", "no problem", "why not", "certainly", "yes please",
)  # fmt: skip
_NO = (
    "no", "nope", "nah", "not really", "incorrect", "wrong", "cancel", "negative", "no thanks",
    "no thank you", "that's wrong", "don't", "do not", "not right", "not correct", "not okay", "not ok",
    "isn't right", "that's not right", "that's not correct", "no way", "not at all", "not yet",
)  # fmt: skip
_UNSURE = ("not sure", "i'm not sure", "i don't know", "don't know", "dunno", "maybe", "perhaps", "i guess")
_YES_NO_TABLE: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    [(tuple(p.split()), "yes") for p in _YES]
    + [(tuple(p.split()), "no") for p in _NO]
    + [(tuple(p.split()), "unsure") for p in _UNSURE]
)


@dataclass(frozen=True)
class YesNo(Expectation):
    """Yes or no. "yes please", "no thanks" and "that's not right" work; "yes no" and "maybe" do not."""

    yes_key: str = "1"
    no_key: str = "2"
    kind: ClassVar[str] = "yes_no"

    def __post_init__(self) -> None:
        for key in (self.yes_key, self.no_key):
            check_key(self.kind, key)
        if self.yes_key == self.no_key:
            problem = f"yes and no both use key {self.yes_key!r}"
            raise InvalidExpectationError(self.kind, problem, "give them different keys")

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        said = utterance(text)
        answers = {m.value for m in phrase_matches(said.raw, _YES_NO_TABLE)}
        if "unsure" in answers:
            return NoMatch("I need a yes or a no", text)
        if answers == {"yes"}:
            return Parsed(True, text)
        if answers == {"no"}:
            return Parsed(False, text)
        if answers:
            return NoMatch("I heard both yes and no", text)
        key = spoken_key(said.words)  # "one" after "say yes or press 1"
        if key in (self.yes_key, self.no_key):
            return Parsed(key == self.yes_key, text)
        return NoMatch("I didn't catch a yes or a no", text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        key = digits.removesuffix("#") or digits
        if key in (self.yes_key, self.no_key):
            return Parsed(key == self.yes_key, digits)
        return NoMatch(f"press {self.yes_key} for yes or {self.no_key} for no", digits)

    def phrases(self) -> tuple[str, ...]:
        return (*_YES, *_NO)

    def examples(self) -> tuple[str, ...]:
        return ("yes", "Yeah, sure.", "yes please", "uh huh", "That's right.", "no", "No thanks.", "nope")

    def counter_examples(self) -> tuple[str, ...]:
        return ("", "maybe", "I'm not sure", "yes no", "the blue one", "um")

    def dtmf_examples(self) -> tuple[str, ...]:
        return (self.yes_key, self.no_key, f"{self.yes_key}#")

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        other = next(k for k in "0123456789*" if k not in (self.yes_key, self.no_key))
        return ("", other)

    def describe(self) -> str:
        return f"yes or no (keypad: {self.yes_key} = yes, {self.no_key} = no)"

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "yes_key": self.yes_key, "no_key": self.no_key}

    def keypad(self) -> Keypad:
        return Keypad(max(len(self.yes_key), len(self.no_key)))


# ------------------------------------------------------------------------------------------- numbers

_DOZENS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("half", "a", "dozen"), "6"),
    (("a", "dozen"), "12"),
    (("dozen",), "12"),
    (("none",), "0"),
)
_MAX_ENUMERATED = 1000


@dataclass(frozen=True)
class Number(Expectation):
    """A whole number (0 or more) said as digits ("12") or words ("twenty one", "a hundred and five").

    ``min`` and ``max`` are inclusive; outside them the reason says so ("that's more than 10").
    Keypad: the digits, optionally ended with ``#``.
    """

    min: int | None = None
    max: int | None = None
    kind: ClassVar[str] = "number"

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidExpectationError(self.kind, f"min {self.min} is above max {self.max}", "swap them")
        if self.max is not None and self.max < 0:
            raise InvalidExpectationError(self.kind, f"max is {self.max}", "spoken numbers are 0 or more")

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        words = list(utterance(text).words)
        if len(words) == 1 and words[0] in DIGIT_HOMOPHONES:  # a lone "for" can only be "four"
            words = [DIGIT_HOMOPHONES[words[0]]]
        for found in reversed(phrase_matches(words, _DOZENS)):
            words[found.start : found.end] = [found.value]
        spans = number_spans(words)
        if not spans:
            if any("." in word for word in words):
                return NoMatch("I need a whole number", text)
            return NoMatch("I didn't catch a number", text)
        values = [parse_cardinal(words[start:end]) for start, end in spans]
        if len(spans) > 1 or values[0] is None:
            return NoMatch("I heard more than one number", text)
        return self._in_range(values[0], text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        number = digits.removesuffix("#")
        if not is_digit_token(number):
            return NoMatch("type the number using the digit keys, then press the pound key", digits)
        return self._in_range(int(number), digits)

    def _in_range(self, value: int, text: str) -> ParseResult:
        if self.min is not None and value < self.min:
            return NoMatch(f"that's less than {self.min}", text)
        if self.max is not None and value > self.max:
            return NoMatch(f"that's more than {self.max}", text)
        return Parsed(value, text)

    def _bounded(self) -> range | None:
        if self.max is None or self.max > 999_999 or self.max - max(self.min or 0, 0) >= _MAX_ENUMERATED:
            return None
        return range(max(self.min or 0, 0), self.max + 1)

    def phrases(self) -> tuple[str, ...]:
        values = self._bounded()
        if values is None:
            return tuple(sorted(NUMBER_WORDS | {"a", "and"}))
        return tuple(dict.fromkeys(form for n in values for form in cardinal_variants(n)))

    def repeatable(self) -> bool:
        return self._bounded() is None

    def hints(self) -> tuple[str, ...]:
        phrases = self.phrases()
        return phrases if not self.repeatable() and len(phrases) <= MAX_HINTS else ()

    def _sample_values(self) -> list[int]:
        low = max(self.min or 0, 0)
        high = self.max if self.max is not None else low + 120
        picks = [low, high, (low + high) // 2, 12, 21, 105, 2026]
        return [n for n in dict.fromkeys(picks) if low <= n <= high]

    def examples(self) -> tuple[str, ...]:
        values = self._sample_values()
        said = [cardinal_variants(n)[-1] if n <= 999_999 else str(n) for n in values]
        out = [str(values[0]), *said[1:], f"um, I'd like {said[-1]} please"]
        return tuple(dict.fromkeys(out))

    def counter_examples(self) -> tuple[str, ...]:
        out = ["", "lots", "a few", "five five", "3.5", "between two and three"]
        if self.max is not None:
            out += [str(self.max + 1)]
            if self.max + 1 <= 999_999:
                out.append(cardinal_words(self.max + 1))
        if self.min is not None and self.min > 0:
            out.append(str(self.min - 1))
        return tuple(out)

    def dtmf_examples(self) -> tuple[str, ...]:
        values = self._sample_values()
        return (f"{values[0]}#", str(values[-1]))

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        out = ["", "#", "1*2"]
        if self.max is not None:
            out.append(f"{self.max + 1}#")
        return tuple(out)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            what = f"a number from {self.min} to {self.max}"
        elif self.min is not None:
            what = f"a number of at least {self.min}"
        elif self.max is not None:
            what = f"a number up to {self.max}"
        else:
            what = "a number"
        return f"{what} (keypad: type it, then #)"

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "min": self.min, "max": self.max}

    def keypad(self) -> Keypad:
        # One key more than the longest answer ends the entry, and is refused as speech is
        # (a single-key answer, 1 to 5 say, ends at its key).
        width = len(str(self.max)) if self.max is not None and self.max >= 0 else 9
        return Keypad(width + 1 if width > 1 else 1, "#")


# -------------------------------------------------------------------------------------------- digits


@dataclass(frozen=True)
class Digits(Expectation):
    """A digit string ("4122", "four one two two", "double five" -> "55", "oh" -> "0"), kept as str.

    Non-digit words are skipped, so "my pin is 4 1 2 2" works. Keypad: the digits, optionally ended
    with ``terminator``.
    """

    min_len: int = 1
    max_len: int = 16
    terminator: str | None = "#"
    kind: ClassVar[str] = "digits"

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            problem = f"lengths {self.min_len}..{self.max_len}"
            raise InvalidExpectationError(self.kind, problem, "use 1 <= min_len <= max_len")
        if self.terminator not in ("#", "*", None):
            problem = f"terminator {self.terminator!r}"
            raise InvalidExpectationError(self.kind, problem, 'use "#", "*" or None')

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        said = spoken_digits(utterance(text).words)
        if not said:
            return NoMatch("I didn't catch any digits", text)
        return self._check_length(said, text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        typed = digits.removesuffix(self.terminator) if self.terminator else digits
        if not is_digit_token(typed):
            return NoMatch("type the digits using the number keys", digits)
        return self._check_length(typed, digits)

    def _check_length(self, said: str, text: str) -> ParseResult:
        count = f"{len(said)} digit{'s' if len(said) != 1 else ''}"
        if self.min_len == self.max_len and len(said) != self.min_len:
            return NoMatch(f"that was {count}; I need exactly {self.min_len}", text)
        if len(said) < self.min_len:
            return NoMatch(f"that was {count}; I need at least {self.min_len}", text)
        if len(said) > self.max_len:
            return NoMatch(f"that was {count}; I need at most {self.max_len}", text)
        return Parsed(said, text)

    def phrases(self) -> tuple[str, ...]:
        return digit_words()

    def repeatable(self) -> bool:
        return True

    def _sample(self) -> str:
        size = min(max(4, self.min_len), self.max_len)
        return ("4122" * (size // 4 + 1))[:size]

    def examples(self) -> tuple[str, ...]:
        sample = self._sample()
        spoken = " ".join(cardinal_words(int(d)) for d in sample)
        out = [sample, spoken, f"my number is {' '.join(sample)}", spoken.replace("zero", "oh")]
        if len(sample) >= 3:
            out.append(" ".join(cardinal_words(int(d)) for d in sample[:-2]) + " double five")
        return tuple(example for example in dict.fromkeys(out) if self._fits(example))

    def _fits(self, example: str) -> bool:
        return self.min_len <= len(spoken_digits(utterance(example).words)) <= self.max_len

    def counter_examples(self) -> tuple[str, ...]:
        out = ["", "hello there", "1" * (self.max_len + 1)]
        if self.min_len > 1:
            out.append("one")
        return tuple(out)

    def dtmf_examples(self) -> tuple[str, ...]:
        sample = self._sample()
        return tuple(dict.fromkeys((sample + (self.terminator or ""), sample)))

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        out = ["", "1" * (self.max_len + 1), "12*4"]
        if self.min_len > 1:
            out.append("1")
        return tuple(out)

    def describe(self) -> str:
        size = str(self.min_len) if self.min_len == self.max_len else f"{self.min_len} to {self.max_len}"
        end = f", then {self.terminator}" if self.terminator else ""
        return f"{size} digits (keypad: type them{end})"

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "min_len": self.min_len,
            "max_len": self.max_len,
            "terminator": self.terminator,
        }

    def keypad(self) -> Keypad:
        # One key more than max_len ends the entry and is refused ("that was 9 digits; I need at most
        # 8"), as the same digits said are: no key is left over for the next question.
        return Keypad(self.max_len + 1 if self.max_len > 1 else 1, self.terminator)


# ---------------------------------------------------------------------------------------- day / time


@dataclass(frozen=True)
class Day(Expectation):
    """A calendar day resolved against ``today`` to a ``datetime.date``; past days do not match.

    Rules (weeks run Monday..Sunday):
    - "monday", "on monday", "this coming monday": the next Monday strictly after today (said on a
      Monday, that is a week away; say "today" for today).
    - "this monday": the next Monday on or after today (today included).
    - "next monday", "monday next week": the Monday of next calendar week. Said on a Wednesday,
      "next friday" is 9 days away, not 2; said on a Sunday, "next monday" is tomorrow.
    - "monday after next": a week after "next monday"; "monday this week": this week's, if not past.
    - "today", "tomorrow", "the day after tomorrow", "in 3 days", "in a week", "3 days from now".
    - "december 1st", "1st of december", "dec 1", "december the first", with an optional year
      ("2026", "twenty twenty six"); without a year, the next such day on or after today.
    - "the 15th": the next 15th on or after today. ISO dates: "2026-12-01".
    - A weekday said with a date is checked: "Monday December 7" must be a Monday.
    Keypad: 1 = Monday ... 7 = Sunday, resolved like a bare weekday.
    """

    kind: ClassVar[str] = "day"

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        try:
            found = parse_day(utterance(text).words, today)
        except OverflowError:  # only when today is within days of date.max
            found = Problem("that's too far ahead")
        if found is None:
            return NoMatch("I didn't catch a day", text)
        if isinstance(found, Problem):
            return NoMatch(found.reason, text)
        return Parsed(found, text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        key = digits.removesuffix("#")
        if len(key) == 1 and "1" <= key <= "7":
            try:
                return Parsed(next_weekday(today, int(key) - 1, include_today=False), digits)
            except OverflowError:
                return NoMatch("that's too far ahead", digits)
        return NoMatch("press 1 for Monday through 7 for Sunday", digits)

    def phrases(self) -> tuple[str, ...]:
        return day_phrases()

    def grammar_phrases(self) -> tuple[str, ...]:
        return day_phrases(common_only=True)

    def hints(self) -> tuple[str, ...]:
        return ("today", "tomorrow", "the day after tomorrow", *WEEKDAYS, *(f"next {d}" for d in WEEKDAYS))

    def examples(self) -> tuple[str, ...]:
        return (
            "tomorrow", "next Tuesday", "on Friday", "this friday", "the day after tomorrow", "today",
            "in three days", "in 3 days", "December 1st", "the first of March", "dec 1", "Um, Monday please",
        )  # fmt: skip

    def counter_examples(self) -> tuple[str, ...]:
        return ("", "blue", "yesterday", "next week", "February thirtieth", "last monday", "the 32nd")

    def dtmf_examples(self) -> tuple[str, ...]:
        return ("1", "5", "7#")

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        return ("", "0", "8", "12")

    def describe(self) -> str:
        return "a day, like tomorrow or next Monday (keypad: 1 = Monday ... 7 = Sunday)"

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def keypad(self) -> Keypad:
        return Keypad(1)


@dataclass(frozen=True)
class Time(Expectation):
    """A time of day as ``datetime.time``: "3 pm", "15:30", "half past three", "noon", "ten thirty".

    Without am/pm or a part of the day, an hour is read in business hours: 1-7 are afternoon
    (13:00-19:00), 8-11 are morning, 12 is noon; 0 and 13-23 and forms like "09:30" or "oh nine
    hundred" are 24-hour times as said. "at night" makes 1-5 early morning and 6-11 evening.
    "quarter to eight" applies the rule to eight first (7:45). Two different times do not match.
    Keypad: HHMM on a 24-hour clock ("1530", "0930#").
    """

    kind: ClassVar[str] = "time"

    def parse_text(self, text: str, *, today: date) -> ParseResult:
        found = parse_time(utterance(text).words)
        if found is None:
            return NoMatch("I didn't catch a time", text)
        if isinstance(found, Problem):
            return NoMatch(found.reason, text)
        return Parsed(found, text)

    def parse_dtmf(self, digits: str, *, today: date) -> ParseResult:
        typed = digits.removesuffix("#")
        if is_digit_token(typed) and len(typed) in (3, 4):
            hour, minute = divmod(int(typed), 100)
            if hour < 24 and minute < 60:
                return Parsed(time(hour, minute), digits)
        return NoMatch("type the time as four digits on a 24-hour clock, like 1 5 3 0", digits)

    def phrases(self) -> tuple[str, ...]:
        return time_phrases()

    def grammar_phrases(self) -> tuple[str, ...]:
        return time_phrases(common_only=True)

    def hints(self) -> tuple[str, ...]:
        return ("noon", "midnight", "half past", "quarter past", "quarter to", "o'clock", "a m", "p m")

    def examples(self) -> tuple[str, ...]:
        return (
            "3 pm", "3PM", "three p m", "15:30", "half past three", "quarter to four", "noon", "ten thirty",
            "ten o'clock", "nine in the morning", "7 in the evening", "Um, let's say 4:15 p.m.",
        )  # fmt: skip

    def counter_examples(self) -> tuple[str, ...]:
        return ("", "blue", "whenever", "in the morning", "three seventy", "two or three", "13 am")

    def dtmf_examples(self) -> tuple[str, ...]:
        return ("1530", "0930#", "930")

    def dtmf_counter_examples(self) -> tuple[str, ...]:
        return ("", "2500", "1275", "12", "12345")

    def describe(self) -> str:
        return "a time, like 3 pm or half past ten (keypad: 24-hour HHMM, like 1530)"

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def keypad(self) -> Keypad:
        return Keypad(4, "#")
