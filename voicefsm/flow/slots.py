"""Slots and prompt templates: what a flow has collected, and how prompts mention it.

Slots live in a pydantic model (all fields optional with defaults). A value the caller gave
is assigned with the model's own validation, so a field validator's message becomes the
no-match reason the next prompt can read out. Prompts are ``str.format`` templates over the
slot values, a few built-ins (:data:`BUILTINS`) and the flow's computed values: a property or
a method without arguments that the flow class defines (``{nearest_slot}``, ``{order_summary}``).
A name is looked up in that order; a computed value is computed only when a prompt names it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import string
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from voicefsm.flow.errors import SlotRejected

log = logging.getLogger(__name__)

#: Names every template may use besides slots: the caller's number, the last no-match reason and the
#: last failed step's error.
BUILTINS: tuple[str, ...] = ("caller", "reason", "error")

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


# -- computed values: the flow's properties and methods without arguments ------------------------

#: Name prefixes python-statemachine treats as callbacks; a template never calls them.
_CALLBACK_PREFIXES = ("on_", "before_", "after_", "enter_", "exit_", "prepare_")


class ComputedValueError(ValueError):
    """A computed value (a flow property or method named in a prompt) raised or cannot be used."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"computing {{{self.name}}} failed: {self.reason}"


def _is_framework(klass: type) -> bool:
    module = getattr(klass, "__module__", "") or ""
    return klass is object or module.startswith(("statemachine", "voicefsm.flow", "voicefsm.runtime"))


def _own_members(flow_cls: type) -> dict[str, object]:
    """Attributes the flow class (and its user-written bases and mixins) define, nearest first."""
    members: dict[str, object] = {}
    for klass in flow_cls.__mro__:
        if _is_framework(klass):
            continue
        for name, value in vars(klass).items():
            members.setdefault(name, value)
    return members


def _step_methods(flow_cls: type) -> set[str]:
    """Methods states run as steps (a ``Do`` state's ``method``): never called by a template."""
    return {
        method
        for state in getattr(flow_cls, "states", ())
        if isinstance(method := getattr(state, "method", None), str)
    }


def _needs_arguments(function: Any) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]  # after self
    except (TypeError, ValueError):
        return True
    return any(
        p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in parameters
    )


def _computed_kind(value: object) -> str | None:
    """ "property" / "method" for a member a template may name, else None."""
    if isinstance(value, property | functools.cached_property):
        return "property"
    if inspect.isfunction(value) and not _needs_arguments(value) and not inspect.iscoroutinefunction(value):
        return "method"
    return None


#: computed_names per flow class: every prompt rendered asks, and working it out reads each method's
#: signature (weakly keyed: a reloaded flow's old class can go).
_COMPUTED_NAMES: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def computed_names(flow_cls: type) -> tuple[str, ...]:
    """The computed values a flow's templates may name: its public properties and sync zero-argument methods.

    Methods named like python-statemachine callbacks (``on_enter_x``...) and methods run as steps
    are left out: a prompt must not run them. Worked out once per class.
    """
    names = _COMPUTED_NAMES.get(flow_cls)
    if names is None:
        steps = _step_methods(flow_cls)
        names = _COMPUTED_NAMES[flow_cls] = tuple(
            name
            for name, value in _own_members(flow_cls).items()
            if not name.startswith(("_", *_CALLBACK_PREFIXES)) and name not in steps and _computed_kind(value)
        )
    return names


def computed_problem(flow_cls: type, name: str) -> tuple[str, str] | None:
    """Why the flow's member ``name`` cannot be named in a template, as (message, fix); None if it can."""
    value = _own_members(flow_cls).get(name)
    if value is None:
        return None
    if name in _step_methods(flow_cls):
        return (
            "is a step's method, which a prompt must not run",
            f"store what {name} finds in a slot and name the slot",
        )
    if inspect.iscoroutinefunction(value):
        return (
            "is an async method, which a prompt cannot wait for",
            f"run it in a Do state with slot=... and name that slot, or make {name} a plain property",
        )
    if inspect.isfunction(value) and _needs_arguments(value):
        return (
            "is a method that needs arguments",
            f"give {name}'s arguments defaults, or make it a property",
        )
    if name.startswith(_CALLBACK_PREFIXES):
        return ("is named like a state callback", "rename it, e.g. without the on_/before_/after_ prefix")
    if _computed_kind(value) is None:
        return (
            f"is a {type(value).__name__}, not a property or method",
            "make it a @property (or a method without arguments) returning what to say",
        )
    return None


class TemplateValues(Mapping[str, object]):
    """What a template is rendered from: slots, then built-ins, then the flow's computed values (lazily)."""

    __slots__ = ("_builtins", "_computed", "_flow", "_slot_names", "_slots")

    def __init__(self, flow: object, builtins: Mapping[str, object]) -> None:
        self._flow = flow
        slots = getattr(flow, "slots", None)
        self._slots = slots
        self._slot_names = (
            frozenset(template_names(type(slots))) if isinstance(slots, BaseModel) else frozenset()
        )
        self._builtins = dict(builtins)
        self._computed = computed_names(type(flow))

    def __getitem__(self, name: str) -> object:
        if name in self._slot_names:
            return getattr(self._slots, name)
        if name in self._builtins:
            return self._builtins[name]
        if name not in self._computed:
            raise KeyError(name)
        try:
            value = getattr(self._flow, name)
            if inspect.ismethod(value):
                value = value()
        except Exception as exc:
            raise ComputedValueError(name, f"{type(exc).__name__}: {exc}") from exc
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if close is not None:
                close()
            raise ComputedValueError(name, "it returned an awaitable; a prompt cannot wait for it")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._slot_names, *self._builtins, *self._computed]))

    def __len__(self) -> int:
        return len(set(self._slot_names) | set(self._builtins) | set(self._computed))


def template_values(flow: object, **builtins: object) -> TemplateValues:
    """What a flow's prompts are rendered from: ``render_template(t, template_values(flow, reason=...))``.

    Slots come first, then the built-ins given, then the flow's computed values (computed only
    when a template names one; one that raises gives ComputedValueError, a ValueError).
    """
    return TemplateValues(flow, builtins)
