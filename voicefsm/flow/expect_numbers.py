"""Spoken numbers, ordinals and digit strings, both ways: words to values and values to words.

Everything works on tokens from :func:`voicefsm.flow.expect_text.tokenize`. Cardinals cover
0..999,999 ("twenty one", "one hundred and five", "a thousand", "twelve hundred", "2 hundred");
digit tokens ("1500") stand for themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
SCALES = {"hundred": 100, "thousand": 1000}
ORDINAL_UNITS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
}  # fmt: skip
ORDINAL_TENS = {"twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50}
ZERO_WORDS = frozenset({"zero", "oh", "o", "nought"})
# "oh" is also an interjection ("oh, it's four one..."), so it is a zero only next to another digit.
_LOOSE_ZEROS = frozenset({"oh", "o"})
# Words speech-to-text writes for a digit it misheard; trusted only next to other digits.
DIGIT_HOMOPHONES = {"won": "1", "to": "2", "too": "2", "for": "4", "fore": "4", "ate": "8"}
REPEATS = {"double": 2, "triple": 3}

NUMBER_WORDS = frozenset({*UNITS, *TEENS, *TENS, *SCALES})
_UNIT_NAMES = {value: name for name, value in UNITS.items()}
_TEEN_NAMES = {value: name for name, value in TEENS.items()}
_TENS_NAMES = {value: name for name, value in TENS.items()}
_ORDINAL_NAMES = {value: name for name, value in {**ORDINAL_UNITS, **ORDINAL_TENS}.items()}


def is_digit_token(token: str) -> bool:
    """True for a token of ASCII digits only ("12", not "1st" or "15:30")."""
    return token.isascii() and token.isdigit()


def is_number_token(token: str) -> bool:
    """True when ``token`` can be part of a spoken cardinal."""
    return token in NUMBER_WORDS or is_digit_token(token)


def parse_cardinal(tokens: Sequence[str]) -> int | None:
    """The value of ``tokens`` when all of them together say one cardinal number, else None."""
    if len(tokens) == 1 and is_digit_token(tokens[0]):
        return int(tokens[0])
    if tuple(tokens) == ("zero",):
        return 0
    parser = _CardinalParser(tuple(tokens))
    value = parser.full()
    return value if value is not None and parser.at_end() else None


def cardinal_prefix(tokens: Sequence[str], start: int, *, max_tokens: int = 6) -> tuple[int, int] | None:
    """The longest cardinal starting at ``start``, as ``(value, end)``, or None."""
    for end in range(min(len(tokens), start + max_tokens), start, -1):
        value = parse_cardinal(tokens[start:end])
        if value is not None:
            return value, end
    return None


def number_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Maximal runs of tokens that look like one spoken number (they may still fail to parse)."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if _starts_number(tokens, i):
            end = i + 1
            while end < len(tokens) and _continues_number(tokens, end):
                end += 1
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def parse_ordinal(tokens: Sequence[str]) -> int | None:
    """The value of an ordinal: "first", "twenty first", "thirtieth", "21st"; else None."""
    toks = tuple(tokens)
    if len(toks) == 1:
        token = toks[0]
        if token in ORDINAL_UNITS:
            return ORDINAL_UNITS[token]
        if token in ORDINAL_TENS:
            return ORDINAL_TENS[token]
        if token[:-2].isdigit() and token[-2:] in ("st", "nd", "rd", "th"):
            return int(token[:-2])
        return None
    if len(toks) == 2 and toks[0] in TENS and toks[1] in ORDINAL_UNITS and ORDINAL_UNITS[toks[1]] < 10:
        return TENS[toks[0]] + ORDINAL_UNITS[toks[1]]
    return None


def ordinal_prefix(tokens: Sequence[str], start: int) -> tuple[int, int] | None:
    """The ordinal starting at ``start`` (one or two tokens), as ``(value, end)``, or None."""
    for end in (start + 2, start + 1):
        if end <= len(tokens):
            value = parse_ordinal(tokens[start:end])
            if value is not None:
                return value, end
    return None


def cardinal_words(n: int, *, use_and: bool = False) -> str:
    """``n`` (0..999,999) spelled out: 105 -> "one hundred five" (or "one hundred and five")."""
    if not 0 <= n <= 999_999:
        raise ValueError(f"cardinal_words covers 0..999999, not {n}")
    if n == 0:
        return "zero"
    parts: list[str] = []
    thousands, rest = divmod(n, 1000)
    if thousands:
        parts += [_below_thousand(thousands, use_and=use_and), "thousand"]
        if use_and and 0 < rest < 100:
            parts.append("and")
    if rest:
        parts.append(_below_thousand(rest, use_and=use_and))
    return " ".join(parts)


def cardinal_variants(n: int) -> tuple[str, ...]:
    """The ways a caller commonly says ``n``: with and without "and", "a hundred" for one hundred."""
    forms = [cardinal_words(n), cardinal_words(n, use_and=True)]
    for form in list(forms):
        if form.startswith("one hundred") or form.startswith("one thousand"):
            forms.append("a" + form[len("one") :])
    return tuple(dict.fromkeys(forms))


def ordinal_words(n: int) -> str:
    """``n`` (1..59) as an ordinal: 21 -> "twenty first"."""
    if n in _ORDINAL_NAMES:
        return _ORDINAL_NAMES[n]
    tens, unit = divmod(n, 10)
    if not 2 <= tens <= 5:
        raise ValueError(f"ordinal_words covers 1..59, not {n}")
    return f"{_TENS_NAMES[tens * 10]} {_ORDINAL_NAMES[unit]}"


def spoken_digits(tokens: Sequence[str]) -> str:
    """The digit string said in ``tokens``: "four one two two", "double five", "oh seven", "4122".

    Words that are not digits are skipped ("my pin is ..."). Teens and tens count as their two
    digits ("twenty one" -> "21"), "hundred" adds "00". "oh" is a zero alone or next to a digit;
    homophones ("for", "to") count only between digits or right after the last one, where
    speech-to-text puts them by mistake.
    """
    toks = tuple(tokens)
    out: list[str] = []
    i = 0
    while i < len(toks):
        token = toks[i]
        if token in REPEATS and i + 1 < len(toks):
            digit = _single_digit(toks[i + 1])
            if digit is not None:
                out.append(digit * REPEATS[token])
                i += 2
                continue
        if token in TENS:
            unit = UNITS.get(toks[i + 1]) if i + 1 < len(toks) else None
            if unit:
                out.append(str(TENS[token] + unit))
                i += 2
                continue
            out.append(str(TENS[token]))
        elif token in TEENS:
            out.append(str(TEENS[token]))
        elif token == "hundred" and out:
            out.append("00")
        elif token == "thousand" and out:
            out.append("000")
        elif is_digit_token(token):
            out.append(token)
        elif token in _LOOSE_ZEROS:
            if len(toks) == 1 or _next_to_digit(toks, i):
                out.append("0")
        elif (digit := _single_digit(token)) is not None:
            out.append(digit)
        elif token in DIGIT_HOMOPHONES and _homophone_is_digit(toks, i):
            out.append(DIGIT_HOMOPHONES[token])
        i += 1
    return "".join(out)


def digit_words() -> tuple[str, ...]:
    """Every word :func:`spoken_digits` understands, for a recognizer grammar."""
    return (*UNITS, "oh", *TEENS, *TENS, "hundred", "thousand", *REPEATS)


def _single_digit(token: str) -> str | None:
    if token in ZERO_WORDS:
        return "0"
    if token in UNITS:
        return str(UNITS[token])
    if is_digit_token(token) and len(token) == 1:
        return token
    return None


def _is_digitish(token: str) -> bool:
    return _single_digit(token) is not None or is_number_token(token)


def _homophone_is_digit(tokens: tuple[str, ...], i: int) -> bool:
    before = i > 0 and _is_digitish(tokens[i - 1])
    after = i + 1 < len(tokens) and _is_digitish(tokens[i + 1])
    return before and (after or i == len(tokens) - 1)


def _next_to_digit(tokens: tuple[str, ...], i: int) -> bool:
    return (i > 0 and _is_digitish(tokens[i - 1])) or (i + 1 < len(tokens) and _is_digitish(tokens[i + 1]))


def _starts_number(tokens: Sequence[str], i: int) -> bool:
    token = tokens[i]
    if token == "a":
        return i + 1 < len(tokens) and tokens[i + 1] in SCALES
    return is_number_token(token)


def _continues_number(tokens: Sequence[str], i: int) -> bool:
    token = tokens[i]
    if token == "and":
        return tokens[i - 1] in SCALES and i + 1 < len(tokens) and is_number_token(tokens[i + 1])
    return _starts_number(tokens, i)


def _below_thousand(n: int, *, use_and: bool) -> str:
    hundreds, rest = divmod(n, 100)
    parts: list[str] = []
    if hundreds:
        parts += [_UNIT_NAMES[hundreds], "hundred"]
        if rest and use_and:
            parts.append("and")
    if rest:
        parts.append(_below_hundred(rest))
    return " ".join(parts)


def _below_hundred(n: int) -> str:
    if n < 10:
        return _UNIT_NAMES[n]
    if n < 20:
        return _TEEN_NAMES[n]
    tens, unit = divmod(n, 10)
    return _TENS_NAMES[tens * 10] + (f" {_UNIT_NAMES[unit]}" if unit else "")


class _CardinalParser:
    """full = [hundreds thousand [and]] [hundreds]; hundreds = [small hundred [and]] [tens]."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.tokens = tokens
        self.i = 0

    def at_end(self) -> bool:
        return self.i == len(self.tokens)

    def peek(self, ahead: int = 0) -> str | None:
        index = self.i + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def full(self) -> int | None:
        head = self.hundreds()
        if self.peek() != "thousand":
            return head
        if head is not None and not 1 <= head < 1000:
            return None
        self.i += 1
        total = (head or 1) * 1000
        had_and = self.peek() == "and"
        self.i += had_and
        rest = self.hundreds()
        if (had_and and not rest) or (rest is not None and rest >= 1000):
            return None
        return total + (rest or 0)

    def hundreds(self) -> int | None:
        if self.peek() == "a" and self.peek(1) in SCALES:
            self.i += 1
            if self.peek() == "thousand":
                return 1
            small: int | None = 1
        else:
            small = self.below_hundred()
        if self.peek() != "hundred":
            return small
        if small is not None and not 1 <= small < 100:
            return None
        self.i += 1
        total = (small or 1) * 100
        had_and = self.peek() == "and"
        self.i += had_and
        rest = self.below_hundred()
        if (had_and and not rest) or (rest is not None and rest >= 100):
            return None
        return total + (rest or 0)

    def below_hundred(self) -> int | None:
        token = self.peek()
        if token is None:
            return None
        if is_digit_token(token):
            self.i += 1
            return int(token)
        if token in TENS:
            self.i += 1
            unit = self.peek()
            if unit in UNITS and unit != "zero":
                self.i += 1
                return TENS[token] + UNITS[unit]
            return TENS[token]
        if token in TEENS:
            self.i += 1
            return TEENS[token]
        if token in UNITS and token != "zero":
            self.i += 1
            return UNITS[token]
        return None
