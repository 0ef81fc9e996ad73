"""Expectations: speech and keypad parsing, grammar phrases, generated examples, slot-type mapping."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from voicefsm.errors import VoiceFsmError
from voicefsm.flow.expect import (
    Choice,
    Day,
    Digits,
    Expectation,
    FreeText,
    InvalidExpectationError,
    Keypad,
    NoMatch,
    Number,
    Parsed,
    Slot,
    Time,
    UnsupportedSlotTypeError,
    YesNo,
    expectation_for_field,
    expectation_for_type,
    expectation_from_spec,
)
from voicefsm.flow.expect_numbers import cardinal_words, parse_cardinal
from voicefsm.flow.expect_text import tokenize, utterance

WEDNESDAY = date(2026, 8, 26)
assert WEDNESDAY.weekday() == 2

# The autouse asyncio fixture in tests/conftest.py is function-scoped but holds no per-example state.
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

MENU = Choice(
    {
        "billing": ["bill", "invoice", "payment"],
        "sales": ["buy", "new account"],
        "agent": ["a person", "human", "representative", "operator"],
    }
)

ALL: list[Expectation] = [
    YesNo(),
    YesNo(yes_key="9", no_key="6"),
    Number(),
    Number(min=1, max=10),
    Number(min=5),
    Number(max=2000),
    Digits(),
    Digits(4, 4),
    Digits(6, 10, terminator=None),
    Day(),
    Time(),
    Choice(["billing", "sales", "support"]),
    MENU,
    Choice(["1 bedroom", "2 bedrooms"]),
    Choice({"support": [], "sales support": ["sales help"]}, keys={"7": "support", "8": "sales support"}),
    FreeText(),
    FreeText(min_words=3),
]


def parsed(expectation: Expectation, text: str, today: date = WEDNESDAY) -> object:
    result = expectation.parse_text(text, today=today)
    assert isinstance(result, Parsed), f"{text!r} did not parse: {result}"
    assert result.text == text
    return result.value


def no_match(expectation: Expectation, text: str, today: date = WEDNESDAY) -> str:
    result = expectation.parse_text(text, today=today)
    assert isinstance(result, NoMatch), f"{text!r} should not parse, got {result}"
    assert result.text == text
    return result.reason


# ------------------------------------------------------------------------------------------ normalise


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Yes, PLEASE!", ("yes", "please")),
        ("3PM", ("3", "pm")),
        ("4:15 p.m.", ("4:15", "pm")),
        ("twenty-one", ("twenty", "one")),
        ("That’s right", ("that's", "right")),
        ("Dec. 1st, 2026", ("dec", "1st", "2026")),
        ("2026-12-01", ("2026-12-01",)),
        ("1,500", ("1500",)),
        ("3.5", ("3.5",)),
        ("Café   au lait", ("cafe", "au", "lait")),
        ("", ()),
    ],
)
def test_tokenize(text: str, tokens: tuple[str, ...]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Um, I'd like, uh, twelve please", ("twelve",)),
        ("I would like three thank you", ("three",)),
        ("let's say monday", ("monday",)),
        ("how about, erm, noon", ("noon",)),
        ("make it four", ("four",)),
        ("please do", ("do",)),
        ("I want billing please thanks", ("billing",)),
    ],
)
def test_fillers_are_dropped_from_words_but_kept_in_raw(text: str, words: tuple[str, ...]) -> None:
    said = utterance(text)
    assert said.words == words
    assert said.raw == tokenize(text)


# -------------------------------------------------------------------------------------------- yes/no


@pytest.mark.parametrize(
    "text",
    [
        "yes", "Yes.", "yeah", "yep", "sure", "correct", "that's right", "That is right", "right", "ok",
        "okay", "please do", "absolutely", "affirmative", "uh huh", "Uh-huh.", "yes please", "Yeah, sure",
        "um, yes", "of course", "yes that's correct", "sounds good", "yes, no problem",
    ],
)  # fmt: skip
def test_yes(text: str) -> None:
    assert parsed(YesNo(), text) is True


@pytest.mark.parametrize(
    "text",
    [
        "no", "No.", "nope", "nah", "not really", "incorrect", "wrong", "cancel", "negative", "no thanks",
        "No thank you", "that's not right", "That's not correct", "no, that's wrong", "I don't think so",
        "uh, no",
    ],
)  # fmt: skip
def test_no(text: str) -> None:
    assert parsed(YesNo(), text) is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("yes no", "I heard both yes and no"),
        ("Yes. No, wait.", "I heard both yes and no"),
        ("maybe", "I need a yes or a no"),
        ("I'm not sure", "I need a yes or a no"),
        ("I don't know", "I need a yes or a no"),
        ("yesterday", "I didn't catch a yes or a no"),
        ("the blue one", "I didn't catch a yes or a no"),
        ("", "I didn't catch a yes or a no"),
        ("um", "I didn't catch a yes or a no"),
    ],
)
def test_yes_no_rejects(text: str, reason: str) -> None:
    assert no_match(YesNo(), text) == reason


def test_yes_no_keypad_and_spoken_keys() -> None:
    default, custom = YesNo(), YesNo(yes_key="9", no_key="6")
    assert default.parse_dtmf("1", today=WEDNESDAY) == Parsed(True, "1")
    assert default.parse_dtmf("2#", today=WEDNESDAY) == Parsed(False, "2#")
    assert isinstance(default.parse_dtmf("3", today=WEDNESDAY), NoMatch)
    assert isinstance(default.parse_dtmf("", today=WEDNESDAY), NoMatch)
    assert custom.parse_dtmf("9", today=WEDNESDAY) == Parsed(True, "9")
    assert custom.parse_dtmf("1", today=WEDNESDAY).reason == "press 9 for yes or 6 for no"  # type: ignore[union-attr]
    assert parsed(default, "one") is True
    assert parsed(custom, "six") is False
    assert default.describe() == "yes or no (keypad: 1 = yes, 2 = no)"
    assert default.keypad() == Keypad(1)


# ------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        ("twelve", 12),
        ("zero", 0),
        ("twenty one", 21),
        ("Twenty-one.", 21),
        ("one hundred and five", 105),
        ("one hundred five", 105),
        ("a hundred", 100),
        ("a thousand", 1000),
        ("two thousand and twenty six", 2026),
        ("nine thousand nine hundred ninety nine", 9999),
        ("twelve hundred", 1200),
        ("2 hundred", 200),
        ("1,500", 1500),
        ("a dozen", 12),
        ("half a dozen", 6),
        ("I'd like 3 tickets please", 3),
        ("um, make it forty two", 42),
        ("for", 4),
        ("none", 0),
    ],
)
def test_number(text: str, value: int) -> None:
    assert parsed(Number(), text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "I didn't catch a number"),
        ("lots", "I didn't catch a number"),
        ("a few", "I didn't catch a number"),
        ("five five", "I heard more than one number"),
        ("one twenty", "I heard more than one number"),
        ("two adults and three children", "I heard more than one number"),
        ("3.5", "I need a whole number"),
        ("I want to go", "I didn't catch a number"),
    ],
)
def test_number_rejects(text: str, reason: str) -> None:
    assert no_match(Number(), text) == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [("11", "that's more than 10"), ("eleven", "that's more than 10"), ("zero", "that's less than 1")],
)
def test_number_range(text: str, reason: str) -> None:
    assert no_match(Number(min=1, max=10), text) == reason
    assert parsed(Number(min=1, max=10), "ten") == 10


def test_number_keypad() -> None:
    bounded = Number(min=1, max=10)
    assert bounded.parse_dtmf("7#", today=WEDNESDAY) == Parsed(7, "7#")
    assert bounded.parse_dtmf("07", today=WEDNESDAY) == Parsed(7, "07")
    assert bounded.parse_dtmf("11#", today=WEDNESDAY) == NoMatch("that's more than 10", "11#")
    for bad in ("", "#", "*", "1*2", "12#3"):
        assert isinstance(bounded.parse_dtmf(bad, today=WEDNESDAY), NoMatch), bad
    assert bounded.keypad() == Keypad(3, "#")  # one key more than "10" ends the entry, refused
    assert bounded.describe() == "a number from 1 to 10 (keypad: type it, then #)"


def test_number_grammar_is_enumerated_when_bounded_and_a_vocabulary_when_not() -> None:
    bounded = Number(min=0, max=120)
    assert not bounded.repeatable()
    assert {"zero", "twelve", "a hundred and five", "one hundred and twenty"} <= set(bounded.phrases())
    assert "one hundred and twenty one" not in bounded.phrases()
    unbounded = Number()
    assert unbounded.repeatable()
    assert {"one", "twenty", "hundred", "thousand", "and", "a"} <= set(unbounded.phrases())


@given(st.integers(min_value=0, max_value=999_999))
@HYPOTHESIS
def test_number_words_round_trip(n: int) -> None:
    assert parse_cardinal(tokenize(cardinal_words(n))) == n
    assert parse_cardinal(tokenize(cardinal_words(n, use_and=True))) == n
    assert parsed(Number(), str(n)) == n


# -------------------------------------------------------------------------------------------- digits


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("four one two two", "4122"),
        ("4122", "4122"),
        ("4 1 2 2", "4122"),
        ("double five", "55"),
        ("triple seven", "777"),
        ("oh", "0"),
        ("oh seven", "07"),
        ("double oh seven", "007"),
        ("zero zero one", "001"),
        ("my pin is one two three four", "1234"),
        ("one two three for", "1234"),
        ("one to three", "123"),
        ("twenty one fifteen", "2115"),
        ("five hundred", "500"),
        ("Four, one, two, two.", "4122"),
        ("4122#", "4122"),
    ],
)
def test_digits(text: str, value: str) -> None:
    assert parsed(Digits(), text) == value


@pytest.mark.parametrize(
    ("expectation", "text", "reason"),
    [
        (Digits(), "", "I didn't catch any digits"),
        (Digits(), "hello there", "I didn't catch any digits"),
        (Digits(), "oh well", "I didn't catch any digits"),
        (Digits(), "it's for my account", "I didn't catch any digits"),
        (Digits(4, 8), "one two", "that was 2 digits; I need at least 4"),
        (Digits(4, 8), "1 2 3 4 5 6 7 8 9", "that was 9 digits; I need at most 8"),
        (Digits(4, 4), "one", "that was 1 digit; I need exactly 4"),
    ],
)
def test_digits_rejects(expectation: Digits, text: str, reason: str) -> None:
    assert no_match(expectation, text) == reason


def test_digits_keypad() -> None:
    pin = Digits(4, 4)
    assert pin.parse_dtmf("1234#", today=WEDNESDAY) == Parsed("1234", "1234#")
    assert pin.parse_dtmf("0012", today=WEDNESDAY) == Parsed("0012", "0012")
    assert pin.parse_dtmf("123#", today=WEDNESDAY) == NoMatch("that was 3 digits; I need exactly 4", "123#")
    for bad in ("", "#", "12*4", "12#4"):
        assert isinstance(pin.parse_dtmf(bad, today=WEDNESDAY), NoMatch), bad
    star = Digits(1, 6, terminator="*")
    assert star.parse_dtmf("42*", today=WEDNESDAY) == Parsed("42", "42*")
    assert isinstance(Digits(terminator=None).parse_dtmf("42#", today=WEDNESDAY), NoMatch)
    assert pin.keypad() == Keypad(5, "#")  # a fifth key ends the entry, refused as speech is
    assert pin.describe() == "4 digits (keypad: type them, then #)"
    assert Digits().repeatable()


# ----------------------------------------------------------------------------------------------- day


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", date(2026, 8, 26)),
        ("tomorrow", date(2026, 8, 27)),
        ("the day after tomorrow", date(2026, 8, 28)),
        ("monday", date(2026, 8, 31)),
        ("on Friday", date(2026, 8, 28)),
        ("wednesday", date(2026, 9, 2)),  # a bare weekday is strictly after today
        ("this wednesday", date(2026, 8, 26)),  # "this" includes today
        ("this friday", date(2026, 8, 28)),
        ("this coming monday", date(2026, 8, 31)),
        ("next tuesday", date(2026, 9, 1)),
        ("next friday", date(2026, 9, 4)),  # the Friday of next week, not the day after tomorrow
        ("friday next week", date(2026, 9, 4)),
        ("friday after next", date(2026, 9, 11)),
        ("in 3 days", date(2026, 8, 29)),
        ("in three days", date(2026, 8, 29)),
        ("in a week", date(2026, 9, 2)),
        ("two days from now", date(2026, 8, 28)),
        ("2026-12-01", date(2026, 12, 1)),
        ("December 1st", date(2026, 12, 1)),
        ("1st of December", date(2026, 12, 1)),
        ("the first of december", date(2026, 12, 1)),
        ("december the first", date(2026, 12, 1)),
        ("dec 1", date(2026, 12, 1)),
        ("Dec. 1st, 2026", date(2026, 12, 1)),
        ("december first twenty twenty seven", date(2027, 12, 1)),
        ("1 december", date(2026, 12, 1)),
        ("december twenty first", date(2026, 12, 21)),
        ("august 1st", date(2027, 8, 1)),  # without a year: the next one that has not passed
        ("the 15th", date(2026, 9, 15)),
        ("on the twenty sixth", date(2026, 8, 26)),
        ("Tuesday, December 1st", date(2026, 12, 1)),
        ("um, can I come in next tuesday please", date(2026, 9, 1)),
        ("tomorrow, thursday", date(2026, 8, 27)),
    ],
)
def test_day(text: str, expected: date) -> None:
    assert parsed(Day(), text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "I didn't catch a day"),
        ("blue", "I didn't catch a day"),
        ("yesterday", "that day has already passed"),
        ("last monday", "that day has already passed"),
        ("monday this week", "that day has already passed"),
        ("2026-08-25", "that day has already passed"),
        ("december 1st 2025", "that day has already passed"),
        ("next week", "which day would that be"),
        ("February thirtieth", "February 30 isn't a date"),
        ("2026-13-01", "month 13 1 isn't a date"),
        ("the 32nd", "there's no 32nd of the month"),
        ("Monday, December 1st", "Tuesday December 1 is a Tuesday, not a Monday"),
        ("tomorrow or friday", "I heard more than one day: Thursday August 27 and Friday"),
        ("dec 1st or dec 2nd", "I heard more than one day: Tuesday December 1 and Wednesday December 2"),
        ("in 99999 days", "that's too far ahead"),
    ],
)
def test_day_rejects(text: str, reason: str) -> None:
    assert no_match(Day(), text) == reason


@pytest.mark.parametrize("offset", range(7))
def test_weekday_rules_hold_on_every_day_of_the_week(offset: int) -> None:
    today = date(2026, 8, 24) + timedelta(days=offset)  # Monday 24 August .. Sunday 30 August
    next_week_monday = date(2026, 8, 31)
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    for index, name in enumerate(names):
        bare = parsed(Day(), name, today)
        this = parsed(Day(), f"this {name}", today)
        following = parsed(Day(), f"next {name}", today)
        assert isinstance(bare, date) and isinstance(this, date)
        assert bare.weekday() == this.weekday() == index
        assert today < bare <= today + timedelta(days=7)
        assert today <= this < today + timedelta(days=7)
        assert following == next_week_monday + timedelta(days=index)


def test_next_monday_said_on_sunday_is_tomorrow() -> None:
    sunday = date(2026, 8, 30)
    assert parsed(Day(), "next monday", sunday) == date(2026, 8, 31)
    assert parsed(Day(), "monday", sunday) == date(2026, 8, 31)


def test_leap_day_without_a_year_is_the_next_leap_year() -> None:
    assert parsed(Day(), "february 29th") == date(2028, 2, 29)


def test_day_keypad_is_monday_to_sunday() -> None:
    day = Day()
    assert day.parse_dtmf("1", today=WEDNESDAY) == Parsed(date(2026, 8, 31), "1")
    assert day.parse_dtmf("3", today=WEDNESDAY) == Parsed(date(2026, 9, 2), "3")
    assert day.parse_dtmf("7#", today=WEDNESDAY) == Parsed(date(2026, 8, 30), "7#")
    for bad in ("", "0", "8", "12", "*"):
        assert isinstance(day.parse_dtmf(bad, today=WEDNESDAY), NoMatch), bad
    assert "1 = Monday" in day.describe() and "7 = Sunday" in day.describe()


def test_day_near_the_end_of_the_calendar_does_not_raise() -> None:
    assert isinstance(Day().parse_text("tomorrow", today=date.max), NoMatch)
    assert isinstance(Day().parse_dtmf("1", today=date.max), NoMatch)


# ---------------------------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 pm", time(15)),
        ("3pm", time(15)),
        ("three p m", time(15)),
        ("3 p.m.", time(15)),
        ("3:30 PM", time(15, 30)),
        ("15:30", time(15, 30)),
        ("half past three", time(15, 30)),
        ("quarter to four", time(15, 45)),
        ("a quarter to eight", time(7, 45)),
        ("quarter past ten", time(10, 15)),
        ("twenty five past four", time(16, 25)),
        ("ten minutes to nine", time(8, 50)),
        ("noon", time(12)),
        ("midday", time(12)),
        ("midnight", time(0)),
        ("ten thirty", time(10, 30)),
        ("three forty five", time(15, 45)),
        ("nine oh five", time(9, 5)),
        ("ten o'clock", time(10)),
        ("nine in the morning", time(9)),
        ("four in the afternoon", time(16)),
        ("7 in the evening", time(19)),
        ("eleven at night", time(23)),
        ("twelve am", time(0)),
        ("12 pm", time(12)),
        ("1530", time(15, 30)),
        ("fifteen hundred", time(15)),
        ("oh nine hundred", time(9)),
        ("twenty one thirty", time(21, 30)),
        ("09:30", time(9, 30)),
        ("um, let's say at 4:15 p.m. please", time(16, 15)),
    ],
)
def test_time(text: str, expected: time) -> None:
    assert parsed(Time(), text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one", time(13)),
        ("seven", time(19)),
        ("seven thirty", time(19, 30)),
        ("eight", time(8)),
        ("eleven", time(11)),
        ("twelve", time(12)),
        ("quarter to one", time(12, 45)),
    ],
)
def test_time_without_am_pm_uses_business_hours(text: str, expected: time) -> None:
    assert parsed(Time(), text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "I didn't catch a time"),
        ("blue", "I didn't catch a time"),
        ("whenever suits", "I didn't catch a time"),
        ("in the morning", "what time would that be"),
        ("three seventy", "3:70 isn't a time"),
        ("13 am", "13 am isn't a time"),
        ("two or three", "I heard more than one time: 2:00 pm and 3:00 pm"),
        ("from two to three", "I heard more than one time: 2:00 pm and 3:00 pm"),
        ("noon or 3", "I heard more than one time: noon and 3:00 pm"),
        ("25:00", "I didn't catch a time"),
    ],
)
def test_time_rejects(text: str, reason: str) -> None:
    assert no_match(Time(), text) == reason


def test_time_keypad_is_24_hour_hhmm() -> None:
    clock = Time()
    assert clock.parse_dtmf("1530", today=WEDNESDAY) == Parsed(time(15, 30), "1530")
    assert clock.parse_dtmf("0930#", today=WEDNESDAY) == Parsed(time(9, 30), "0930#")
    assert clock.parse_dtmf("930", today=WEDNESDAY) == Parsed(time(9, 30), "930")
    for bad in ("", "2500", "1275", "12", "12345", "12*0"):
        assert isinstance(clock.parse_dtmf(bad, today=WEDNESDAY), NoMatch), bad
    assert clock.keypad() == Keypad(4, "#")


# -------------------------------------------------------------------------------------------- choice


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("billing", "billing"),
        ("BILLING", "billing"),
        ("I'd like to talk to billing please", "billing"),
        ("it's about my invoice", "billing"),
        ("a payment", "billing"),
        ("I want to buy something", "sales"),
        ("open a new account", "sales"),
        ("can I speak to a person", "agent"),
        ("Representative!", "agent"),
        ("not billing, sales", "sales"),
        ("two", "sales"),
        ("option three", "agent"),
        ("press 1", "billing"),
    ],
)
def test_choice(text: str, value: str) -> None:
    assert parsed(MENU, text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("billing or sales", "I heard both billing and sales"),
        ("bill, buy or a human", "I heard both billing, sales and agent"),
        ("", "I didn't catch billing, sales or agent"),
        ("the weather", "I didn't catch billing, sales or agent"),
        ("billings", "I didn't catch billing, sales or agent"),
        ("four", "I didn't catch billing, sales or agent"),
    ],
)
def test_choice_rejects(text: str, reason: str) -> None:
    assert no_match(MENU, text) == reason


def test_choice_prefers_the_longest_phrase_and_spoken_digits() -> None:
    nested = Choice({"support": [], "sales support": ["sales help"]})
    assert parsed(nested, "sales support please") == "sales support"
    assert parsed(nested, "just support") == "support"
    rooms = Choice(["1 bedroom", "2 bedrooms"])
    assert parsed(rooms, "two bedrooms") == "2 bedrooms"
    assert parsed(rooms, "1 bedroom") == "1 bedroom"
    assert rooms.phrases() == ("one bedroom", "two bedrooms")


def test_choice_keys() -> None:
    assert MENU.parse_dtmf("3", today=WEDNESDAY) == Parsed("agent", "3")
    assert MENU.parse_dtmf("1#", today=WEDNESDAY) == Parsed("billing", "1#")
    assert MENU.parse_dtmf("4", today=WEDNESDAY) == NoMatch(
        "press 1 for billing, 2 for sales, 3 for agent", "4"
    )
    custom = Choice(["billing", "agent"], keys={"0": "agent", "*": "agent", "11": "billing"})
    assert custom.parse_dtmf("0", today=WEDNESDAY) == Parsed("agent", "0")
    assert custom.parse_dtmf("*", today=WEDNESDAY) == Parsed("agent", "*")
    assert custom.parse_dtmf("11#", today=WEDNESDAY) == Parsed("billing", "11#")
    assert isinstance(custom.parse_dtmf("1", today=WEDNESDAY), NoMatch)
    assert custom.keypad() == Keypad(2, "#")
    assert MENU.describe() == "billing, sales or agent (keypad: 1 = billing, 2 = sales, 3 = agent)"
    many = Choice([f"option {word}" for word in "abcdefghijk"])
    assert many.keys == () and many.keypad() == Keypad(0)


@pytest.mark.parametrize(
    ("options", "keys", "problem"),
    [
        ([], None, "no options"),
        ("billing", None, "options is the single string 'billing'"),
        ({"billing": "bill"}, None, "synonyms of 'billing' are the single string 'bill'"),
        ({"billing": ["help"], "support": ["help"]}, None, "'help' would mean both 'billing' and 'support'"),
        (["billing", "!!!"], None, "option phrase '!!!' has no words a caller could say"),
        (["billing"], {"1": "sales"}, "key '1' points to unknown option 'sales'"),
        (["billing"], {"A": "billing"}, "key 'A' is not keypad input"),
    ],
)
def test_choice_declaration_errors(options: object, keys: dict[str, str] | None, problem: str) -> None:
    with pytest.raises(InvalidExpectationError) as caught:
        Choice(options, keys)  # type: ignore[arg-type]
    assert caught.value.problem == problem
    assert str(caught.value).startswith(f"choice expectation: {problem}; ")


# ------------------------------------------------------------------------------------------ free text


def test_free_text() -> None:
    text = FreeText()
    assert parsed(text, "  I'd like to   change my address ") == "I'd like to change my address"
    assert parsed(text, "hello") == "hello"
    assert no_match(text, "") == "I didn't hear anything"
    assert no_match(text, "um, uh") == "I didn't hear anything"
    assert no_match(FreeText(min_words=3), "yes please") == "could you say a bit more"
    assert isinstance(text.parse_dtmf("1#", today=WEDNESDAY), NoMatch)
    assert text.open_vocabulary() and text.phrases() == () and text.keypad() == Keypad(0)


# ---------------------------------------------------------------------------- properties of them all


@pytest.mark.parametrize("expectation", ALL, ids=repr)
def test_examples_parse_and_counter_examples_do_not(expectation: Expectation) -> None:
    assert len(expectation.examples()) >= 2
    assert len(expectation.counter_examples()) >= 2
    for text in expectation.examples():
        parsed(expectation, text)
    for text in expectation.counter_examples():
        no_match(expectation, text)
    for digits in expectation.dtmf_examples():
        assert isinstance(expectation.parse_dtmf(digits, today=WEDNESDAY), Parsed), digits
    for digits in expectation.dtmf_counter_examples():
        assert isinstance(expectation.parse_dtmf(digits, today=WEDNESDAY), NoMatch), digits


@given(today=st.dates(min_value=date(2000, 1, 1), max_value=date(2200, 12, 31)))
@HYPOTHESIS
def test_day_examples_parse_on_any_day(today: date) -> None:
    for text in Day().examples():
        value = parsed(Day(), text, today)
        assert isinstance(value, date) and today <= value <= today + timedelta(days=366)
    for text in Day().counter_examples():
        no_match(Day(), text, today)


@pytest.mark.parametrize("expectation", ALL, ids=repr)
def test_phrases_are_lowercase_words(expectation: Expectation) -> None:
    phrases = expectation.phrases()
    assert len(set(phrases)) == len(phrases)
    for phrase in phrases:
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", phrase), phrase
    assert expectation.open_vocabulary() == (phrases == ())
    hints = expectation.hints()
    assert len(hints) <= 50
    assert all(re.fullmatch(r"[a-z']+( [a-z']+)*", hint) for hint in hints), hints


@pytest.mark.parametrize(
    "expectation", [e for e in ALL if not e.repeatable() and not e.open_vocabulary()], ids=repr
)
def test_every_grammar_phrase_parses(expectation: Expectation) -> None:
    """What the recognizer may return from the grammar must never be a no-match."""
    for phrase in expectation.phrases():
        parsed(expectation, phrase)
    assert set(expectation.grammar_phrases()) <= set(expectation.phrases())


def test_closed_grammar_recognizers_get_the_common_core_of_long_lists() -> None:
    days, times = Day().grammar_phrases(), Time().grammar_phrases()
    assert {"tomorrow", "next tuesday", "on friday", "the day after tomorrow"} <= set(days)
    assert "the first of december" not in days and len(days) < 60
    assert {"half past three", "quarter to four", "ten thirty", "noon", "three p m"} <= set(times)
    assert "ten twenty five" not in times and len(times) < len(Time().phrases()) / 1.5
    assert YesNo().grammar_phrases() == YesNo().phrases()


def test_grammar_phrases_hold_the_canonical_forms() -> None:
    assert {"yes", "no", "that's right", "not really", "uh huh"} <= set(YesNo().phrases())
    assert {"tomorrow", "next tuesday", "december first", "the first of december"} <= set(Day().phrases())
    assert {"three p m", "half past three", "quarter to four", "noon", "ten thirty"} <= set(Time().phrases())
    assert {"oh", "double", "nine"} <= set(Digits().phrases())
    assert set(MENU.phrases()) == {
        "billing", "bill", "invoice", "payment", "sales", "buy", "new account",
        "agent", "a person", "human", "representative", "operator",
    }  # fmt: skip


@pytest.mark.parametrize("expectation", ALL, ids=repr)
def test_spec_round_trips_through_json(expectation: Expectation) -> None:
    spec = json.loads(json.dumps(expectation.to_spec()))
    assert spec["kind"] == expectation.kind
    assert expectation_from_spec(spec) == expectation


@pytest.mark.parametrize("expectation", ALL, ids=repr)
def test_expectations_are_immutable_values(expectation: Expectation) -> None:
    assert hash(expectation) == hash(expectation_from_spec(expectation.to_spec()))
    names = [f.name for f in dataclasses.fields(expectation)]  # type: ignore[arg-type]
    for name in [*names, "anything_else"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(expectation, name, None)
    assert expectation.describe()


def test_bad_specs_and_parameters_are_reported() -> None:
    with pytest.raises(InvalidExpectationError, match="unknown kind"):
        expectation_from_spec({"kind": "colour"})
    with pytest.raises(InvalidExpectationError, match="bad parameters"):
        expectation_from_spec({"kind": "number", "maximum": 3})
    with pytest.raises(InvalidExpectationError, match="min 5 is above max 1"):
        Number(5, 1)
    with pytest.raises(InvalidExpectationError, match=r"lengths 0\.\.4"):
        Digits(0, 4)
    with pytest.raises(InvalidExpectationError, match="terminator"):
        Digits(terminator="x")
    with pytest.raises(InvalidExpectationError, match="both use key"):
        YesNo(yes_key="1", no_key="1")
    with pytest.raises(InvalidExpectationError, match="min_words"):
        FreeText(min_words=0)
    assert issubclass(InvalidExpectationError, VoiceFsmError)


_VOCABULARY = [
    "yes", "no", "not", "one", "twenty", "hundred", "thousand", "and", "a", "oh", "double", "monday", "next",
    "this", "the", "of", "december", "first", "31st", "in", "days", "week", "after", "tomorrow", "today",
    "half", "quarter", "past", "to", "pm", "a", "m", "o'clock", "noon", "15:30", "2026-02-30", "0930",
    "99999", "3.5", "um", "please", "billing", "human", "#", "-", ",", "minutes", "at", "night", "hours",
    "zero",
]  # fmt: skip


@given(st.text(max_size=80) | st.lists(st.sampled_from(_VOCABULARY), max_size=12).map(" ".join))
@HYPOTHESIS
def test_parse_text_never_raises(text: str) -> None:
    for expectation in ALL:
        result = expectation.parse_text(text, today=WEDNESDAY)
        assert isinstance(result, Parsed | NoMatch)
        if isinstance(result, NoMatch):
            assert result.reason


@given(st.text(alphabet="0123456789*#", max_size=20) | st.text(max_size=5))
@HYPOTHESIS
def test_parse_dtmf_never_raises(digits: str) -> None:
    for expectation in ALL:
        assert isinstance(expectation.parse_dtmf(digits, today=WEDNESDAY), Parsed | NoMatch)


# ------------------------------------------------------------------------------------ from slot types


class Colour(enum.StrEnum):
    DARK_BLUE = "blue"
    RED = "red"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Booking(BaseModel):
    party: Annotated[int, Field(ge=1, le=8)] | None = None
    pin: Annotated[str, Digits(4, 4)] | None = None
    day: date | None = None
    colour: Colour | None = None


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (bool, YesNo()),
        (int, Number()),
        (int | None, Number()),
        (Annotated[int, Field(ge=1, le=8)], Number(1, 8)),
        (Annotated[int, Field(gt=0, lt=10)], Number(1, 9)),
        (date, Day()),
        (time, Time()),
        (str, FreeText()),
        (Literal["billing", "sales"], Choice(["billing", "sales"])),
        (Annotated[str, Digits(4, 8)], Digits(4, 8)),
        (Colour, Choice({"blue": ["dark blue"], "red": []})),
        (Size, Choice({"1": ["small"], "2": ["large"]})),
    ],
)
def test_expectation_for_type(annotation: object, expected: Expectation) -> None:
    assert expectation_for_type(annotation) == expected
    assert Slot(annotation) == expected


def test_enum_choice_values_validate_into_the_model() -> None:
    choice = expectation_for_field(Booking, "colour")
    value = parsed(choice, "the dark blue one please")
    assert Booking(colour=value).colour is Colour.DARK_BLUE  # type: ignore[arg-type]
    size = parsed(expectation_for_type(Size), "large")
    assert Size(int(size)) is Size.LARGE  # type: ignore[call-overload]


def test_expectation_for_field_reads_pydantic_constraints() -> None:
    assert expectation_for_field(Booking, "party") == Number(1, 8)
    assert expectation_for_field(Booking, "pin") == Digits(4, 4)
    assert expectation_for_field(Booking, "day") == Day()
    with pytest.raises(UnsupportedSlotTypeError, match="no such pydantic field"):
        expectation_for_field(Booking, "colour_name")


@pytest.mark.parametrize(
    ("annotation", "detail"),
    [
        (datetime, "use two slots"),
        (list[str], ""),
        (int | str, "a union of several types"),
        (Literal[1, 2], "Literal values must be strings"),
        (float, ""),
    ],
)
def test_unsupported_slot_types_say_what_to_do(annotation: object, detail: str) -> None:
    with pytest.raises(UnsupportedSlotTypeError) as caught:
        expectation_for_type(annotation)
    assert detail in str(caught.value)
    assert "declare one explicitly" in str(caught.value)
