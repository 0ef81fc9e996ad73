"""Slots and prompt templates: what a flow has collected, and how prompts mention it.

Slots live in a pydantic model (all fields optional with defaults). A value the caller gave
is assigned with the model's own validation, so a field validator's message becomes the
no-match reason the next prompt can read out. Prompts are ``str.format`` templates over the
slot values plus a few built-ins (:data:`BUILTINS`).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from voicefsm.flow.errors import SlotRejected

log = logging.getLogger(__name__)

#: Names every template may use besides slots: the caller's number and the last no-match reason.
BUILTINS: tuple[str, ...] = ("caller", "reason")

_ROOT = re.compile(r"[.\[]")
_FORMATTER = string.Formatter()


class NoSlots(BaseModel):
    """The slots of a flow that collects nothing."""


def slot_names(model: type[BaseModel]) -> tuple[str, ...]:
    """The field names of a slots model, in declaration order."""
    return tuple(model.model_fields)


def template_names(model: type[BaseModel]) -> tuple[str, ...]:
    """What templates may name from a slots model: its fields and its computed fields."""
    return (*model.model_fields, *model.model_computed_fields)


def slots_model_problem(model: object) -> str | None:
    """Why ``model`` cannot hold a flow's slots, or None when it can."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"slots_model must be a pydantic BaseModel class, not {model!r}"
    required = [name for name, info in model.model_fields.items() if info.is_required()]
    if required:
        return f"slots_model {model.__name__} has fields without a default ({', '.join(required)})"
    return None


def template_fields(template: str) -> tuple[str, ...]:
    """The names a template refers to (``"{day:%A} at {time.hour}"`` -> ``("day", "time")``).

    Raises ValueError for a malformed template or a positional field (``{}``, ``{0}``).
    """
    names: list[str] = []
    for _, field, _, _ in _FORMATTER.parse(template):
        if field is None:
            continue
        root = _ROOT.split(field, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError(f"positional field {{{field}}}: name a slot instead, e.g. {{day}}")
        names.append(root)
    return tuple(dict.fromkeys(names))


class _Formatter(string.Formatter):
    """Renders an unset (None) value as nothing instead of failing on its format spec."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if value is None:
            return ""
        return super().format_field(value, format_spec)


_RENDER = _Formatter()


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Fill ``template`` from ``values``; unset values render empty. Raises ValueError/KeyError/TypeError."""
    return " ".join(_RENDER.vformat(template, (), values).split())


def slot_values(slots: BaseModel) -> dict[str, object]:
    """The slots (and computed fields) as Python values: dates stay dates, so ``{day:%A}`` works."""
    return {name: getattr(slots, name) for name in template_names(type(slots))}


def assign_slot(slots: BaseModel, name: str, value: object) -> object:
    """Validate ``value`` as the model would and store it; returns the stored (coerced) value.

    Raises SlotRejected with the validator's message as ``reason``; the slot keeps its old value.
    """
    try:
        type(slots).__pydantic_validator__.validate_assignment(slots, name, value)
    except ValidationError as exc:
        raise SlotRejected(name, value, validation_reason(exc)) from exc
    return getattr(slots, name)


def validation_reason(exc: ValidationError) -> str:
    """Short text for the first validation error: a ValueError's own message, else pydantic's."""
    first = exc.errors()[0]
    ctx = first.get("ctx") or {}
    error = ctx.get("error")
    if isinstance(error, Exception) and str(error):
        return str(error)
    return str(first.get("msg", "that value is not allowed"))
