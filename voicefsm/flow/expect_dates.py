"""Spoken days and times of day, resolved to ``datetime.date`` and ``datetime.time``.

Both parsers search the whole utterance ("can I come in next tuesday please"), keep the longest
phrases, and answer with a value, a :class:`Problem` (a reason fit for a reprompt) or None when
nothing day- or time-like was said. Pure functions: "today" is always a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta

from voicefsm.flow.expect_numbers import (
    TEENS,
    TENS,
    UNITS,
    cardinal_prefix,
    cardinal_variants,
    is_digit_token,
    ordinal_prefix,
    ordinal_words,
    parse_cardinal,
)
from voicefsm.flow.expect_text import Match, longest_matches

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
MONTHS = {name: number for number, name in enumerate(MONTH_NAMES, start=1)} | {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8,
    "sep": 9, "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
MAX_DAYS_AHEAD = 3660  # "in 99999 days" is a mistake, not a booking; also keeps date arithmetic in range
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class Problem:
    """Something day- or time-like was said but cannot be used; ``reason`` is said back to the caller."""

    reason: str


@dataclass(frozen=True)
class _DayHit:
    day: date | Problem
    weekday: int | None = None  # a named weekday: checked against an explicit date said with it
    calendar: bool = False  # a month and day or an ISO date (so "Monday December 7" can be checked)


_DayMatcher = Callable[[Sequence[str], int, date], Iterator[tuple[int, _DayHit]]]


def parse_day(tokens: Sequence[str], today: date) -> date | Problem | None:
    """The day said in ``tokens`` relative to ``today`` (see :class:`voicefsm.flow.expect.Day`)."""
    matchers: tuple[_DayMatcher, ...] = (_relative_day, _days_from_now, _weekday, _calendar_date)
    found = [
        Match(i, end, hit)
        for i in range(len(tokens))
        for matcher in matchers
        for end, hit in matcher(tokens, i, today)
    ]
    hits = [m.value for m in longest_matches(found)]
    if not hits:
        if "week" in tokens or "weekend" in tokens:
            return Problem("which day would that be")
        return None
    problems = [hit.day for hit in hits if isinstance(hit.day, Problem)]
    if problems:
        return problems[0]
    explicit = {hit.day for hit in hits if hit.weekday is None and isinstance(hit.day, date)}
    named = [hit for hit in hits if hit.weekday is not None]
    if len(explicit) > 1:
        return Problem("I heard more than one day: " + " and ".join(say_date(d) for d in sorted(explicit)))
    if explicit:
        day = explicit.pop()
        calendar = any(hit.calendar for hit in hits)
        for hit in named:
            if hit.weekday == day.weekday():
                continue
            if not calendar:
                other = WEEKDAYS[hit.weekday or 0].capitalize()
                return Problem(f"I heard more than one day: {say_date(day)} and {other}")
            wrong = WEEKDAYS[hit.weekday or 0].capitalize()
            return Problem(f"{say_date(day)} is a {WEEKDAYS[day.weekday()].capitalize()}, not a {wrong}")
    else:
        days = {hit.day for hit in named if isinstance(hit.day, date)}
        if len(days) > 1:
            return Problem("I heard more than one day: " + " and ".join(say_date(d) for d in sorted(days)))
        day = days.pop()
    if day < today:
        return Problem("that day has already passed")
    return day


def say_date(day: date) -> str:
    """``day`` as it would be said back: "Tuesday December 1"."""
    return f"{WEEKDAYS[day.weekday()].capitalize()} {MONTH_NAMES[day.month - 1].capitalize()} {day.day}"


def next_weekday(today: date, weekday: int, *, include_today: bool) -> date:
    """The first ``weekday`` (0 = Monday) on or strictly after ``today``."""
    ahead = (weekday - today.weekday()) % 7
    if ahead == 0 and not include_today:
        ahead = 7
    return today + timedelta(days=ahead)


def weekday_of_next_week(today: date, weekday: int) -> date:
    """``weekday`` in the calendar week (Monday..Sunday) after the one holding ``today``."""
    monday_next_week = today + timedelta(days=7 - today.weekday())
    return monday_next_week + timedelta(days=weekday)


def day_phrases(*, common_only: bool = False) -> tuple[str, ...]:
    """Every day phrase a recognizer grammar should hold (months spelled out, years left off).

    ``common_only``: just the days of the coming weeks by name ("tomorrow", "next Tuesday"), for
    a closed-grammar recognizer that confuses more the more alternatives it is given.
    """
    phrases = ["today", "tomorrow", "the day after tomorrow", "day after tomorrow"]
    for name in WEEKDAYS:
        phrases += [name, f"on {name}", f"this {name}", f"next {name}", f"this coming {name}"]
        phrases += [f"on next {name}", f"{name} next week"]
    if common_only:
        return tuple(dict.fromkeys(phrases))
    for n in range(1, 15):
        unit = "day" if n == 1 else "days"
        phrases += [f"in {words} {unit}" for words in cardinal_variants(n)]
    phrases += ["in a day", "in a week", "in two weeks", "in three weeks"]
    for month, name in enumerate(MONTH_NAMES):
        for n in range(1, _MAX_MONTH_DAYS[month] + 1):
            ordinal = ordinal_words(n)
            phrases += [f"{name} {ordinal}", f"{name} the {ordinal}"]
            phrases += [f"the {ordinal} of {name}", f"{ordinal} of {name}"]
    phrases += [f"the {ordinal_words(n)}" for n in range(1, 32)]
    return tuple(dict.fromkeys(phrases))


def _relative_day(tokens: Sequence[str], i: int, today: date) -> Iterator[tuple[int, _DayHit]]:
    for phrase, delta in _RELATIVE_DAYS:
        end = i + len(phrase)
        if tuple(tokens[i:end]) == phrase:
            yield end, _DayHit(today + timedelta(days=delta))


_RELATIVE_DAYS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("the", "day", "after", "tomorrow"), 2),
    (("day", "after", "tomorrow"), 2),
    (("the", "day", "before", "yesterday"), -2),
    (("day", "before", "yesterday"), -2),
    (("tomorrow",), 1),
    (("today",), 0),
    (("tonight",), 0),
    (("yesterday",), -1),
)
_DAY_UNITS = {"day": 1, "days": 1, "week": 7, "weeks": 7}


def _days_from_now(tokens: Sequence[str], i: int, today: date) -> Iterator[tuple[int, _DayHit]]:
    """ "in three days", "in a week", "3 days from now", "a week from today"."""
    start = i + 1 if tokens[i] == "in" else i
    count = _count_at(tokens, start)
    if count is None:
        return
    n, j = count
    if j >= len(tokens) or tokens[j] not in _DAY_UNITS:
        return
    end = j + 1
    if tokens[i] != "in":
        if tuple(tokens[end : end + 2]) not in (("from", "now"), ("from", "today")):
            return
        end += 2
    delta = n * _DAY_UNITS[tokens[j]]
    if delta > MAX_DAYS_AHEAD:
        yield end, _DayHit(Problem("that's too far ahead"))
    else:
        yield end, _DayHit(today + timedelta(days=delta))


def _count_at(tokens: Sequence[str], i: int) -> tuple[int, int] | None:
    if i >= len(tokens):
        return None
    if tokens[i] == "a":
        return 1, i + 1
    return cardinal_prefix(tokens, i, max_tokens=3)


_WEEKDAY_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("this", "coming"), "coming"),
    (("coming",), "coming"),
    (("this",), "this"),
    (("next",), "next"),
    (("last",), "last"),
    ((), "bare"),
)
_WEEKDAY_SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("of", "next", "week"), "next"),
    (("next", "week"), "next"),
    (("after", "next"), "after_next"),
    (("of", "this", "week"), "this_week"),
    (("this", "week"), "this_week"),
    (("last", "week"), "last"),
    ((), ""),
)


def _weekday(tokens: Sequence[str], i: int, today: date) -> Iterator[tuple[int, _DayHit]]:
    for prefix, prefix_mode in _WEEKDAY_PREFIXES:
        j = i + len(prefix)
        if tuple(tokens[i:j]) != prefix or j >= len(tokens) or tokens[j] not in WEEKDAYS:
            continue
        weekday = WEEKDAYS.index(tokens[j])
        for suffix, suffix_mode in _WEEKDAY_SUFFIXES:
            end = j + 1 + len(suffix)
            if tuple(tokens[j + 1 : end]) != suffix:
                continue
            mode = suffix_mode or prefix_mode
            if "last" in (prefix_mode, suffix_mode):
                mode = "last"
            yield end, _DayHit(_resolve_weekday(today, weekday, mode), weekday)
        return


def _resolve_weekday(today: date, weekday: int, mode: str) -> date | Problem:
    if mode == "last":
        return Problem("that day has already passed")
    if mode == "next":
        return weekday_of_next_week(today, weekday)
    if mode == "after_next":
        return weekday_of_next_week(today, weekday) + timedelta(days=7)
    if mode == "this":
        return next_weekday(today, weekday, include_today=True)
    if mode == "this_week":
        return today + timedelta(days=weekday - today.weekday())
    return next_weekday(today, weekday, include_today=False)


def _calendar_date(tokens: Sequence[str], i: int, today: date) -> Iterator[tuple[int, _DayHit]]:
    token = tokens[i]
    iso = _ISO_DATE.fullmatch(token)
    if iso:
        iso_year, iso_month, iso_day = (int(part) for part in iso.groups())
        yield i + 1, _DayHit(calendar=True, day=_make_date(iso_year, iso_month, iso_day, today))
        return
    if token in MONTHS:  # "december 1st", "december the first", "dec 1 2026"
        j = i + 2 if i + 1 < len(tokens) and tokens[i + 1] == "the" else i + 1
        day_number = _day_number(tokens, j)
        if day_number is not None:
            day, end = day_number
            year, end = _year_at(tokens, end)
            yield end, _DayHit(calendar=True, day=_make_date(year, MONTHS[token], day, today))
        return
    j = i + 1 if token == "the" else i
    day_number = _day_number(tokens, j)
    if day_number is None:
        return
    day, after_day = day_number
    k = after_day + 1 if tuple(tokens[after_day : after_day + 1]) == ("of",) else after_day
    if k < len(tokens) and tokens[k] in MONTHS:  # "the 1st of december", "1 december 2026"
        year, end = _year_at(tokens, k + 1)
        yield end, _DayHit(calendar=True, day=_make_date(year, MONTHS[tokens[k]], day, today))
    elif ordinal_prefix(tokens, j) is not None and (token == "the" or not tokens[j].isalpha()):
        # "the 15th" / "15th"; a bare word ordinal ("first thing tomorrow") is not a day.
        yield after_day, _DayHit(_day_of_month(day, today))


def _day_number(tokens: Sequence[str], i: int) -> tuple[int, int] | None:
    if i >= len(tokens):
        return None
    found = ordinal_prefix(tokens, i)
    if found is None:
        found = cardinal_prefix(tokens, i, max_tokens=2)
    if found is None or found[0] > 99:
        return None
    return found


def _year_at(tokens: Sequence[str], i: int) -> tuple[int | None, int]:
    """An optional year after a date: "2026", "twenty twenty six", "two thousand and twenty six"."""
    if i < len(tokens) and tokens[i] == "twenty":
        rest = cardinal_prefix(tokens, i + 1, max_tokens=2)
        if rest is not None and rest[0] < 100:
            return 2000 + rest[0], rest[1]
    found = cardinal_prefix(tokens, i, max_tokens=5)
    if found is not None and 1900 <= found[0] <= 2999:
        return found
    return None, i


def _make_date(year: int | None, month: int, day: int, today: date) -> date | Problem:
    name = MONTH_NAMES[month - 1].capitalize() if 1 <= month <= 12 else f"month {month}"
    not_a_date = Problem(f"{name} {day} isn't a date")
    if not 1 <= month <= 12 or not 1 <= day <= _MAX_MONTH_DAYS[month - 1]:
        return not_a_date
    if year is not None:
        try:
            return date(year, month, day)
        except ValueError:
            return Problem(f"{name} {day} {year} isn't a date")
    for candidate_year in range(today.year, today.year + 9):  # Feb 29 may be up to 8 years away
        try:
            candidate = date(candidate_year, month, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    return not_a_date


def _day_of_month(day: int, today: date) -> date | Problem:
    """ "the 15th": the next 15th on or after today."""
    if not 1 <= day <= 31:
        return Problem(f"there's no {_ordinal(day)} of the month")
    year, month = today.year, today.month
    for _ in range(13):
        try:
            candidate = date(year, month, day)
        except ValueError:
            candidate = None
        if candidate is not None and candidate >= today:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return Problem(f"there's no {_ordinal(day)} of the month")  # pragma: no cover - 1..31 all occur yearly


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------------------------------------- times

_NAMED_TIMES: tuple[tuple[tuple[str, ...], time], ...] = (
    (("twelve", "noon"), time(12)),
    (("12", "noon"), time(12)),
    (("noon",), time(12)),
    (("midday",), time(12)),
    (("twelve", "midnight"), time(0)),
    (("12", "midnight"), time(0)),
    (("midnight",), time(0)),
)
_PERIODS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("in", "the", "morning"), "am"),
    (("this", "morning"), "am"),
    (("morning",), "am"),
    (("am",), "am"),
    (("a", "m"), "am"),
    (("in", "the", "afternoon"), "pm"),
    (("this", "afternoon"), "pm"),
    (("afternoon",), "pm"),
    (("in", "the", "evening"), "pm"),
    (("this", "evening"), "pm"),
    (("evening",), "pm"),
    (("pm",), "pm"),
    (("p", "m"), "pm"),
    (("at", "night"), "night"),
    (("tonight",), "night"),
)
_PAST = frozenset({"past", "after"})
_TO = frozenset({"to", "till", "til", "before", "of"})
_LITERAL_ZERO = frozenset({"oh", "o", "zero"})


@dataclass(frozen=True)
class _TimeHit:
    at: time | Problem | None  # None: only a part of the day ("in the morning") was said


def parse_time(tokens: Sequence[str]) -> time | Problem | None:
    """The time of day said in ``tokens`` (see :class:`voicefsm.flow.expect.Time` for the rules)."""
    found = [
        Match(i, end, hit)
        for i in range(len(tokens))
        for matcher in (_named_time, _minutes_past_or_to, _clock_time, _period_only)
        for end, hit in matcher(tokens, i)
    ]
    hits = [m.value.at for m in longest_matches(found)]
    problems = [hit for hit in hits if isinstance(hit, Problem)]
    if problems:
        return problems[0]
    times = sorted({hit for hit in hits if isinstance(hit, time)})
    if len(times) > 1:
        return Problem("I heard more than one time: " + " and ".join(say_time(t) for t in times))
    if times:
        return times[0]
    if hits:
        return Problem("what time would that be")
    return None


def say_time(at: time) -> str:
    """``at`` as it would be said back: "3:30 pm", "noon", "midnight"."""
    if at == time(12):
        return "noon"
    if at == time(0):
        return "midnight"
    hour = at.hour % 12 or 12
    return f"{hour}:{at.minute:02d} {'am' if at.hour < 12 else 'pm'}"


def to_24h(hour: int, period: str | None, *, literal: bool) -> int | Problem:
    """Hour on a 24-hour clock. Without a period, 1-7 are afternoon and 8-11 morning (business hours)."""
    if period is None:
        if literal or hour == 0 or hour >= 12:
            return hour
        return hour + 12 if hour <= 7 else hour
    if hour > 12 or hour == 0:
        # "15:30 pm" is redundant but clear; "15 am" is a contradiction.
        if period == "pm" and hour >= 12:
            return hour
        return Problem(f"{hour} {period} isn't a time")
    if period == "am":
        return 0 if hour == 12 else hour
    if period == "night":
        return 0 if hour == 12 else (hour if hour <= 5 else hour + 12)
    return 12 if hour == 12 else hour + 12


def time_phrases(*, common_only: bool = False) -> tuple[str, ...]:
    """Time phrases for a recognizer grammar: every hour, five-minute steps, with and without a period.

    ``common_only``: quarter-hour steps only, for a closed-grammar recognizer (see day_phrases).
    """
    periods = ("", " a m", " p m", " in the morning", " in the afternoon", " in the evening")
    steps = range(15, 60, 15) if common_only else range(10, 60, 5)
    minutes = ("o'clock", *(() if common_only else ("oh five",)), *(cardinal_variants(m)[0] for m in steps))
    phrases = ["noon", "midday", "midnight", "twelve noon", "twelve midnight"]
    for hour in range(1, 13):
        said = cardinal_variants(hour)[0]
        bases = [said, *(f"{said} {m}" for m in minutes), f"half past {said}", f"quarter past {said}"]
        bases += [f"quarter to {said}", f"a quarter past {said}", f"a quarter to {said}"]
        phrases += [base + period for base in bases for period in periods]
    return tuple(dict.fromkeys(phrases))


def _named_time(tokens: Sequence[str], i: int) -> Iterator[tuple[int, _TimeHit]]:
    for phrase, at in _NAMED_TIMES:
        end = i + len(phrase)
        if tuple(tokens[i:end]) == phrase:
            yield end, _TimeHit(at)


def _period_at(tokens: Sequence[str], i: int) -> tuple[str | None, int]:
    for phrase, period in _PERIODS:
        end = i + len(phrase)
        if tuple(tokens[i:end]) == phrase:
            return period, end
    return None, i


def _period_only(tokens: Sequence[str], i: int) -> Iterator[tuple[int, _TimeHit]]:
    period, end = _period_at(tokens, i)
    if period is not None:
        yield end, _TimeHit(None)


def _hour_at(tokens: Sequence[str], i: int) -> tuple[int, int, bool] | None:
    """An hour 0..23 at ``i``: ``(hour, end, literal)``; literal means said on a 24-hour clock."""
    if i >= len(tokens):
        return None
    if tokens[i] in _LITERAL_ZERO and i + 2 < len(tokens):
        # "oh nine hundred", "oh nine thirty"; a lone "oh, three" is an interjection, not 03:00.
        hour = _digit_at(tokens, i + 1)
        if hour is not None and (tokens[i + 2] == "hundred" or tokens[i + 2] in {*TEENS, *TENS}):
            return hour, i + 2, True
    for end in (i + 2, i + 1):
        if end > len(tokens):
            continue
        part = tokens[i:end]
        if any(is_digit_token(t) and len(t) > 2 for t in part):
            continue
        hour = parse_cardinal(part)
        if hour is not None and hour <= 23:
            literal = (len(part) == 1 and is_digit_token(part[0]) and part[0].startswith("0")) or hour >= 13
            return hour, end, literal or hour == 0
    return None


def _digit_at(tokens: Sequence[str], i: int) -> int | None:
    token = tokens[i] if i < len(tokens) else ""
    if token in UNITS:
        return UNITS[token]
    return int(token) if is_digit_token(token) and len(token) == 1 else None


def _minutes_past_or_to(tokens: Sequence[str], i: int) -> Iterator[tuple[int, _TimeHit]]:
    """ "half past three", "a quarter to four", "twenty five past ten", "ten minutes to nine"."""
    j = i + 1 if tokens[i] == "a" else i
    if j >= len(tokens):
        return
    if tokens[j] == "half":
        minutes, k = 30, j + 1
    elif tokens[j] == "quarter":
        minutes, k = 15, j + 1
    else:
        found = cardinal_prefix(tokens, j, max_tokens=2)
        if found is None or not 1 <= found[0] <= 59 or tokens[i] == "a":
            return
        minutes, k = found
        if k < len(tokens) and tokens[k] in ("minute", "minutes"):
            k += 1
        elif minutes % 5 or minutes > 25:
            return  # "from two to three" is a range, not 2:58; "five past" and "ten to" are the usual steps
    direction = tokens[k] if k < len(tokens) else ""
    if direction in _PAST or direction in _TO:
        k += 1
    elif tokens[j] == "half":
        direction = "past"  # British "half three" = 3:30
    else:
        return
    hour_found = _hour_at(tokens, k)
    if hour_found is None:
        return
    hour, end, literal = hour_found
    if end < len(tokens) and tokens[end] == "o'clock":
        end += 1
    period, end = _period_at(tokens, end)
    hour24 = to_24h(hour, period, literal=literal)
    if isinstance(hour24, Problem):
        yield end, _TimeHit(hour24)
        return
    total = hour24 * 60 + (minutes if direction in _PAST else -minutes)
    yield end, _TimeHit(time((total // 60) % 24, total % 60))


def _clock_time(tokens: Sequence[str], i: int) -> Iterator[tuple[int, _TimeHit]]:
    """ "15:30", "3 pm", "ten thirty", "nine o'clock in the morning", "1530", "oh nine hundred"."""
    token = tokens[i]
    clock = _CLOCK.fullmatch(token)
    minutes: int | Problem | None = None
    if clock:
        hour, minutes = int(clock.group(1)), int(clock.group(2))
        end, literal = i + 1, token.startswith("0") or hour >= 13 or hour == 0
    elif is_digit_token(token) and len(token) in (3, 4):
        hour, minutes = divmod(int(token), 100)
        end, literal = i + 1, len(token) == 4 and (token.startswith("0") or hour >= 13)
    else:
        found = _hour_at(tokens, i)
        if found is None:
            return
        hour, end, literal = found
        minutes, end, literal = _minutes_after_hour(tokens, end, literal)
    if hour > 23:
        return
    if isinstance(minutes, int) and minutes >= 60:
        minutes = Problem(f"{hour}:{minutes} isn't a time")
    period, end = _period_at(tokens, end)
    if isinstance(minutes, Problem):
        yield end, _TimeHit(minutes)
        return
    hour24 = to_24h(hour, period, literal=literal)
    yield end, _TimeHit(hour24 if isinstance(hour24, Problem) else time(hour24, minutes or 0))


def _minutes_after_hour(
    tokens: Sequence[str], i: int, literal: bool
) -> tuple[int | Problem | None, int, bool]:
    if i >= len(tokens):
        return None, i, literal
    token = tokens[i]
    if token == "o'clock":
        return 0, i + 1, literal
    if token == "hundred":  # military: "fifteen hundred (hours)"
        end = i + 2 if tuple(tokens[i + 1 : i + 2]) == ("hours",) else i + 1
        return 0, end, True
    if token in _LITERAL_ZERO and i + 1 < len(tokens):  # "nine oh five"
        unit = _digit_at(tokens, i + 1)
        if unit is not None:
            return unit, i + 2, literal
    found = cardinal_prefix(tokens, i, max_tokens=2)
    if found is not None and found[0] >= 10:
        said = tokens[i : found[1]]
        if len(said) == 1 and is_digit_token(said[0]) and len(said[0]) != 2:
            return None, i, literal
        return found[0], found[1], literal
    return None, i, literal
