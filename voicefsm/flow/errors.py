"""Errors of the flow layer: a flow that cannot work, cannot be loaded, or was sent a bad event.

Each keeps its data in attributes and builds its message in ``__str__``; the message says
what is wrong, where (file, line, flow, state) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from voicefsm.errors import VoiceFsmError


class FlowError(VoiceFsmError):
    """Base class of the flow layer's errors."""


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """One thing wrong with a flow definition, located and with a fix.

    ``state`` and ``event`` are None when the problem is about the flow as a whole.
    """

    path: str
    line: int
    flow: str
    state: str | None
    event: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.flow}.{self.state}" if self.state else self.flow
        sep = ": " if not self.state else "" if self.message.startswith("'s ") else " "
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.path}:{self.line}: {where}{sep}{self.message}.{fix}"


class FlowDefinitionError(FlowError):
    """A flow class was rejected when it was defined; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[FlowProblem]) -> None:
        super().__init__(tuple(problems))
        self.problems = tuple(problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"] + [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class FlowLoadError(FlowError):
    """A flow could not be loaded from ``source`` (a file path or ``module:Class``)."""

    def __init__(self, source: str, reason: str, fix: str = "", *, where: str = "") -> None:
        super().__init__(source, reason, fix)
        self.source = source
        self.reason = reason
        self.fix = fix
        self.where = where  # "flows/x.py:12": the user's line that failed, shown first

    def __str__(self) -> str:
        fix = f"; {self.fix}" if self.fix else ""
        if self.where:
            return f"{self.where}: {self.reason} (loading the flow from {self.source}){fix}"
        return f"cannot load a flow from {self.source}: {self.reason}{fix}"


class UnknownEventError(FlowError, ValueError):
    """An event the flow does not declare was sent to it (python-statemachine would ignore it silently)."""

    def __init__(self, flow: str, event: str, declared: Sequence[str]) -> None:
        super().__init__(flow, event, tuple(declared))
        self.flow = flow
        self.event = event
        self.declared = tuple(declared)

    def __str__(self) -> str:
        return (
            f"{self.flow} has no event {self.event!r}; it declares {', '.join(self.declared) or 'none'}. "
            "Send one of those, or declare a transition on it"
        )


class TemplateError(FlowError):
    """A prompt template could not be rendered (``template`` in ``state``)."""

    def __init__(self, flow: str, state: str, template: str, reason: str) -> None:
        super().__init__(flow, state, template, reason)
        self.flow = flow
        self.state = state
        self.template = template
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.flow}.{self.state}: cannot render {self.template!r}: {self.reason}"


class SlotRejected(FlowError):
    """A value did not pass the slot model's validation; ``reason`` is short text fit for a reprompt."""

    def __init__(self, slot: str, value: object, reason: str) -> None:
        super().__init__(slot, value, reason)
        self.slot = slot
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"slot {self.slot!r} rejected {self.value!r}: {self.reason}"


class GraphUnavailableError(FlowError):
    """A diagram format needs a tool that is not installed."""

    def __init__(self, fmt: str, needs: str) -> None:
        super().__init__(fmt, needs)
        self.fmt = fmt
        self.needs = needs

    def __str__(self) -> str:
        return f"drawing a flow as {self.fmt} needs {self.needs}; Mermaid and DOT output need nothing"
