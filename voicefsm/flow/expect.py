"""What a listening state accepts, declared once and used five ways.

An :class:`Expectation` parses speech (:meth:`~Expectation.parse_text`) and keypad input
(:meth:`~Expectation.parse_dtmf`), lists the phrases for an offline recognizer grammar
(:meth:`~Expectation.phrases`) and cloud speech-to-text hints (:meth:`~Expectation.hints`), and
generates test utterances (:meth:`~Expectation.examples`, :meth:`~Expectation.counter_examples`).
Expectations are immutable values; parsing is pure (no I/O, no clock: ``today`` is passed in).

Concrete kinds: :class:`YesNo`, :class:`Number`, :class:`Digits`, :class:`Day`, :class:`Time`,
:class:`Choice`, :class:`FreeText`. :func:`expectation_for_type` picks one from a slot's type.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, Union

from voicefsm.flow.expect_base import (
    Expectation,
    ExpectationError,
    InvalidExpectationError,
    Keypad,
    NoMatch,
    Parsed,
    ParseResult,
    UnsupportedSlotTypeError,
)
from voicefsm.flow.expect_choice import Choice, FreeText
from voicefsm.flow.expect_kinds import Day, Digits, Number, Time, YesNo
from voicefsm.flow.expect_text import tokenize

__all__ = [
    "Choice",
    "Day",
    "Digits",
    "Expectation",
    "ExpectationError",
    "FreeText",
    "InvalidExpectationError",
    "Keypad",
    "NoMatch",
    "Number",
    "ParseResult",
    "Parsed",
    "Slot",
    "Time",
    "UnsupportedSlotTypeError",
    "YesNo",
    "expectation_for_field",
    "expectation_for_type",
    "expectation_from_spec",
]

# ----------------------------------------------------------------------------------- from slot types

_KINDS: dict[str, type[Expectation]] = {
    cls.kind: cls for cls in (YesNo, Number, Digits, Day, Time, Choice, FreeText)
}


def expectation_from_spec(spec: Mapping[str, Any]) -> Expectation:
    """Rebuild an expectation from :meth:`Expectation.to_spec` output."""
    params = dict(spec)
    kind = params.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidExpectationError(str(kind), "unknown kind", f"use one of {', '.join(sorted(_KINDS))}")
    try:
        return cls(**params)
    except TypeError as exc:
        problem = f"bad parameters {params!r} ({exc})"
        raise InvalidExpectationError(kind, problem, "check the flow spec") from exc


def expectation_for_type(tp: object) -> Expectation:
    """The expectation for a slot annotation.

    bool -> YesNo, int -> Number (``Annotated[int, Field(ge=1, le=9)]`` sets the range),
    date -> Day, time -> Time, str -> FreeText, Literal["a", "b"] and str/int Enums -> Choice.
    ``X | None`` is read as X; ``Annotated[X, SomeExpectation()]`` uses that expectation.
    """
    base, metadata = _unwrap(tp)
    for item in metadata:
        if isinstance(item, Expectation):
            return item
    if base is bool:
        return YesNo()
    if base is int:
        low, high = _int_bounds(metadata)
        return Number(low, high)
    if base is datetime:
        raise UnsupportedSlotTypeError(tp, "a datetime needs a day and a time: use two slots, date and time")
    if base is date:
        return Day()
    if base is time:
        return Time()
    if base is str:
        return FreeText()
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if not all(isinstance(c, str) for c in choices):
            raise UnsupportedSlotTypeError(tp, "Literal values must be strings")
        return Choice(list(choices))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return _enum_choice(base)
    raise UnsupportedSlotTypeError(tp)


def Slot(annotation: object) -> Expectation:
    """Shorthand for :func:`expectation_for_type`."""
    return expectation_for_type(annotation)


def expectation_for_field(model: type[Any], field: str) -> Expectation:
    """The expectation for field ``field`` of pydantic model ``model``, including its constraints."""
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, Mapping) or field not in fields:
        where = f"{getattr(model, '__name__', model)}.{field}"
        raise UnsupportedSlotTypeError(where, "no such pydantic field")
    info = fields[field]
    annotation = info.annotation
    if info.metadata:
        return expectation_for_type(Annotated[(annotation, *info.metadata)])
    return expectation_for_type(annotation)


def _unwrap(tp: object) -> tuple[object, list[object]]:
    metadata: list[object] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extra = typing.get_args(tp)
            metadata += extra
        elif origin in (Union, types.UnionType):
            members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(members) != 1:
                raise UnsupportedSlotTypeError(tp, "a union of several types")
            tp = members[0]
        else:
            return tp, metadata


def _int_bounds(metadata: list[object]) -> tuple[int | None, int | None]:
    low: int | None = None
    high: int | None = None
    items = list(metadata)
    for item in items:  # grows while iterating: a pydantic FieldInfo nests its constraints in .metadata
        items += list(getattr(item, "metadata", ()) or ())
        for name, bound, is_low in (("ge", 0, True), ("gt", 1, True), ("le", 0, False), ("lt", -1, False)):
            value = getattr(item, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                if is_low:
                    low = value + bound if low is None else max(low, value + bound)
                else:
                    high = value + bound if high is None else min(high, value + bound)
    return low, high


def _enum_choice(enum_type: type[enum.Enum]) -> Choice:
    options: dict[str, list[str]] = {}
    for member in enum_type:
        if not isinstance(member.value, str | int) or isinstance(member.value, bool):
            raise UnsupportedSlotTypeError(enum_type, f"member {member.name} has a non-str, non-int value")
        name_words = member.name.lower().replace("_", " ")
        value = str(member.value)
        options[value] = [name_words] if tokenize(name_words) != tokenize(value) else []
    return Choice(options)
