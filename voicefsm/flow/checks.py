"""Static checks: a flow that could strand a caller is rejected before any call.

:func:`check_flow` returns every problem it finds, each located (file, line, flow, state,
event) and with a fix. The rules:

- every state is reachable from the initial state;
- from every state, a final state can be reached by the conversation itself (not only by a
  hang-up or an error);
- every state that waits has an exit for every event that can end its wait (a Say: spoken,
  tts_error, disconnected; an Ask: filled, no_input, no_match, tts_error, stt_error,
  disconnected), and not only guarded ones; a plain State has an unguarded eventless exit;
- no loop made only of prompts, retries and failures (retries belong in ``Ask(retries=...)``);
- every template names existing slots or built-ins; every Ask's slot exists;
- no transition on an event the state can never receive (typos included);
- no state or event named like a VoiceFlow attribute.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from statemachine import State, StateChart
from statemachine.callbacks import SpecReference
from statemachine.event import Event
from statemachine.spec_parser import names_in_boolean_expr
from statemachine.transition import Transition

from voicefsm.flow.errors import FlowProblem
from voicefsm.flow.kinds import (
    DISCONNECTED,
    ERROR_EXECUTION,
    FAILURE,
    LIMIT_REACHED,
    NO_INPUT,
    NO_MATCH,
    RUNTIME_EVENTS,
    TIMED_OUT,
    events_received,
    kind_for,
    kind_of,
)
from voicefsm.flow.slots import (
    BUILTINS,
    computed_names,
    computed_problem,
    slots_model_problem,
    template_fields,
    template_names,
)

#: Events that end a call from outside the conversation (with the kinds' own aborting events,
#: e.g. tts_error): they do not count as the flow finishing.
_ABORTING = frozenset({DISCONNECTED, ERROR_EXECUTION, LIMIT_REACHED})
#: Events that carry no caller input (with the kinds' quiet events): a loop made only of these
#: never ends by itself.
_NO_PROGRESS = frozenset({ERROR_EXECUTION})
#: Events whose exit, in a suggested fix, is an ending rather than the next state.
_TROUBLE = frozenset({NO_INPUT, NO_MATCH, DISCONNECTED, FAILURE, TIMED_OUT, ERROR_EXECUTION, LIMIT_REACHED})
_FLOW_ATTRIBUTES = frozenset(
    {"slots", "caller", "parameters", "steps", "log", "current", "yes", "no", "slots_model", "uses_stt",
     "apology", "resources", "max_duration_s", "max_state_entries", "max_same_state", "limit_goodbye"}
)  # fmt: skip
_RESERVED = _FLOW_ATTRIBUTES | {name for name in dir(StateChart) if not name.startswith("_")}


@dataclass(frozen=True)
class Edge:
    """One transition, as the checks (and the spec) see it."""

    source: State
    target: State | None
    events: tuple[str, ...]
    guards: tuple[str, ...]
    default: bool
    transition: Transition

    @property
    def guarded(self) -> bool:
        """True when a condition can stop this transition."""
        return bool(self.guards)


def normalize_event(event: str) -> str:
    """``error_execution`` is python-statemachine's attribute spelling of ``error.execution``."""
    return ERROR_EXECUTION if event == "error_execution" else event


def guard_names(transition: Transition) -> tuple[str, ...]:
    """The transition's conditions as text (``yes``, ``not busy``)."""
    names = []
    for spec in transition.cond:
        if spec.is_convention:
            continue
        name = spec.attr_name or str(spec.func)
        names.append(name if spec.expected_value is not False else f"not {name}")
    return tuple(names)


def edges_of(flow: type[StateChart[Any]]) -> list[Edge]:
    """Every transition of a flow (initial pseudo-transitions excluded), in declaration order."""
    defaults: frozenset[Transition] = getattr(flow, "_default_transitions", frozenset())
    edges = []
    for state in flow.states:
        for transition in state.transitions:
            if transition.initial:
                continue
            events = tuple(dict.fromkeys(normalize_event(str(e)) for e in transition.events))
            edges.append(
                Edge(
                    state,
                    transition.target,
                    events,
                    guard_names(transition),
                    transition in defaults,
                    transition,
                )
            )
    return edges


def _matches(descriptor: str, event: str) -> bool:
    return normalize_event(descriptor) == event or Event(id=descriptor).match(event)


class _Checker:
    def __init__(self, flow: Any) -> None:
        self.flow = flow
        self.path, self.line = flow._voice_source
        self.edges = edges_of(flow)
        self.states: list[State] = list(flow.states)
        self.defaults: frozenset[str] = getattr(flow, "_default_states", frozenset())
        self.problems: list[FlowProblem] = []
        self.waiting_problem: set[str] = set()
        kinds = [kind_for(state) for state in self.states]
        self.aborting = _ABORTING.union(*(kind.aborting_events for kind in kinds))
        self.quiet = _NO_PROGRESS.union(*(kind.quiet_events for kind in kinds))
        self.known_events = tuple(
            dict.fromkeys([*RUNTIME_EVENTS, *(e for kind in kinds for e in kind.events_received())])
        )

    def add(self, state: State | None, message: str, fix: str = "", event: str | None = None) -> None:
        line = self.line
        if state is not None and getattr(state, "path", None) == self.path:
            line = getattr(state, "line", line)
        sid = state.id if state is not None else None
        self.problems.append(FlowProblem(self.path, line, self.flow.__name__, sid, event, message, fix))

    def out(self, state: State) -> list[Edge]:
        return [edge for edge in self.edges if edge.source is state]

    def ending_name(self) -> str:
        endings = [s.id for s in self.states if s.final and s.id not in self.defaults]
        return endings[0] if endings else "goodbye"

    # -- the rules ------------------------------------------------------------------------------

    def run(self) -> list[FlowProblem]:
        self.check_slots_and_arguments()
        self.check_limits()
        self.check_names()
        self.check_callback_names()
        self.check_templates()
        self.check_events()
        self.check_waiting()
        reachable = self.check_reachable()
        self.check_finishes(reachable)
        self.check_loops()
        return self.problems

    def check_slots_and_arguments(self) -> None:
        model = self.flow.slots_model
        model_problem = slots_model_problem(model)
        if model_problem:
            self.add(None, model_problem, "give every field a default, e.g. `day: date | None = None`")
        for state in self.states:
            kind = kind_for(state)
            for message, fix in [*kind.argument_problems(), *kind.flow_problems(self.flow)]:
                self.add(state, message, fix)

    def check_limits(self) -> None:
        for name in ("max_duration_s", "max_state_entries", "max_same_state"):
            value = getattr(self.flow, name, None)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                example = {"max_duration_s": "600", "max_state_entries": "1000", "max_same_state": "10"}[name]
                self.add(
                    None,
                    f"sets {name} = {value!r}, which is not a positive number",
                    f"use a positive number (the default is {example}), or None for no limit",
                )

    def check_names(self) -> None:
        for state in self.states:
            if state.id in _RESERVED:
                self.add(state, f"is named like VoiceFlow's own attribute {state.id!r}", "rename the state")
        for event in self.flow._events:
            if event.id in _RESERVED:
                self.add(
                    None, f"declares event {event.id!r}, named like VoiceFlow's own attribute", "rename it"
                )

    def check_callback_names(self) -> None:
        callables = [
            name for name in dir(self.flow) if not name.startswith("_") and callable(getattr(self.flow, name))
        ]
        owners: list[tuple[State, str, Any]] = [(state, "state", state._specs) for state in self.states]
        owners += [
            (edge.source, "/".join(edge.events) or "eventless", edge.transition._specs) for edge in self.edges
        ]
        for state, label, specs in owners:
            for spec in specs:
                if spec.is_convention or spec.reference is not SpecReference.NAME:
                    continue
                names = (
                    names_in_boolean_expr(spec.attr_name)
                    if spec.may_contain_boolean_expression
                    else {spec.attr_name}
                )
                for name in sorted(names - {"In", "True", "False"}):
                    if not hasattr(self.flow, name):
                        where = "" if label == "state" else f"'s transition on {label}"
                        self.add(
                            state,
                            f"{where} names {name!r}, which the flow does not define".lstrip(),
                            _did_you_mean(name, callables) or f"define `def {name}(self, ...)` on the flow",
                        )

    def check_templates(self) -> None:
        model = self.flow.slots_model
        names = template_names(model) if slots_model_problem(model) is None else ()
        computed = computed_names(self.flow)
        known = (*names, *BUILTINS, *computed)
        for state in self.states:
            for label, template in kind_for(state).templates().items():
                try:
                    fields = template_fields(template)
                except ValueError as exc:
                    self.add(
                        state, f"has a malformed {label} {template!r}: {exc}", "write fields as {slot_name}"
                    )
                    continue
                for field in fields:
                    if field in known:
                        continue
                    unusable = computed_problem(self.flow, field)
                    if unusable is not None:
                        self.add(state, f"'s {label} names {{{field}}}, which {unusable[0]}", unusable[1])
                        continue
                    members = f", nor a property of the flow ({_listing(computed)})" if computed else ""
                    self.add(
                        state,
                        f"'s {label} names {{{field}}}, which is neither a slot of "
                        f"{getattr(model, '__name__', model)} ({_listing(names) or 'none'}) "
                        f"nor a built-in ({_listing(('{' + b + '}' for b in BUILTINS), 'or')}){members}",
                        _did_you_mean(field, known, braces=True)
                        or f"use one of those names, add a `{field}` field to the slots model, "
                        "or a property to the flow",
                    )

    def check_events(self) -> None:
        for edge in self.edges:
            if edge.default:
                continue
            received = events_received(edge.source)
            for descriptor in edge.transition.events:
                name = str(descriptor)
                if name == "error_execution" or any(_matches(name, event) for event in received):
                    continue
                state = edge.source
                if state.final:
                    continue  # python-statemachine already refuses transitions out of final states
                if any(_matches(name, event) for event in self.known_events):
                    kind = kind_of(state)
                    waits = kind_for(state).waits_for
                    self.add(
                        state,
                        f"never receives {name!r}: a {kind} state only gets {_listing(waits, 'or')}",
                        f"move the transition to a state that gets {name}, or delete it",
                        event=name,
                    )
                else:
                    self.add(
                        state,
                        f"has a transition on {name!r}, an event nothing sends",
                        _did_you_mean(name, received)
                        or f"the runtime sends only {_listing(self.known_events)}",
                        event=name,
                    )

    def check_waiting(self) -> None:
        for state in self.states:
            if state.final:
                continue
            kind = kind_for(state)
            if kind.eventless:
                eventless = [edge for edge in self.out(state) if not edge.events]
                if not any(not edge.guarded for edge in eventless):
                    self.waiting_problem.add(state.id)
                    self.add(
                        state,
                        "can wait forever: a plain State waits for nothing, so it must move on at once",
                        f"add an unguarded eventless transition, e.g. `{state.id}.to({self.ending_name()})` "
                        "on a line of its own (after any guarded ones)",
                    )
                continue
            for event in kind.waits_for:
                handling = [edge for edge in self.out(state) if event in edge.events]
                if not handling:
                    self.waiting_problem.add(state.id)
                    self.add(
                        state,
                        f"can wait forever: no transition on {event}",
                        f"add `{event} = {state.id}.to({self._exit_for(state, event)})` (or append "
                        f"`| {state.id}.to(...)` to your `{event} = ...` line)",
                        event=event,
                    )
                elif all(edge.guarded for edge in handling):
                    self.waiting_problem.add(state.id)
                    guards = _listing((" and ".join(edge.guards) for edge in handling), "or")
                    self.add(
                        state,
                        f"can wait forever: every transition on {event} is guarded ({guards}), "
                        "so input none of them accepts leaves the caller waiting",
                        f"end the `{event} = ...` line with an unguarded fallback, e.g. "
                        f"`| {state.id}.to({self._exit_for(state, event)})`",
                        event=event,
                    )
            for edge in self.out(state):
                if DISCONNECTED in edge.events and edge.target is not None and not edge.target.final:
                    self.add(
                        state,
                        f"goes to {edge.target.id} on disconnected, but after a hang-up nobody is listening",
                        "send disconnected to a final state (or leave it out: it then goes to hung_up)",
                        event=DISCONNECTED,
                    )

    def _exit_for(self, state: State, event: str) -> str:
        if event in _TROUBLE or event in kind_for(state).aborting_events:
            return self.ending_name()
        return "next_state"

    def check_reachable(self) -> set[str]:
        initial = self.flow.initial_state
        seen = _reach(initial, self.edges, lambda edge: True) if initial is not None else set()
        start = initial.id if initial is not None else "(none)"
        for state in self.states:
            if state.id not in seen and state.id not in self.defaults:
                self.add(
                    state,
                    f"is unreachable: no path leads to it from the initial state {start}",
                    "add a transition into it, or delete it",
                )
        return seen

    def check_finishes(self, reachable: set[str]) -> None:
        if self.waiting_problem:
            return  # a state without its exits would be reported twice; those come first
        finals = {s.id for s in self.states if s.final}
        reported: set[str] = set()
        for state in self.states:
            if state.final or state.id not in reachable or state.id in reported:
                continue
            seen = _reach(
                state, self.edges, lambda edge: bool(set(edge.events) - self.aborting) or not edge.events
            )
            if seen & finals:
                continue
            region = [s for s in self.states if s.id in seen]
            reported.update(seen)
            asks = [s for s in region if NO_MATCH in events_received(s)]
            example = f"no_match = {asks[0].id}" if asks else f"spoken = {region[0].id}"
            self.add(
                state,
                f"can never finish the call: {_listing([s.id for s in region])} only lead to each other, "
                "never to an ending (only a hang-up or an error would end the call)",
                f"give them a way out, e.g. `{example}.to({self.ending_name()})`",
            )

    def check_loops(self) -> None:
        def stuck(edge: Edge) -> bool:
            quiet = not edge.events or set(edge.events) <= self.quiet
            return quiet and not edge.guarded and edge.target is not None and not edge.default

        loop_edges = [edge for edge in self.edges if stuck(edge)]
        reported: set[str] = set()
        for state in self.states:
            if state.id in reported:
                continue
            cycle = _find_cycle(state, loop_edges)
            if cycle is None:
                continue
            reported.update(edge.source.id for edge in cycle)
            path = " ".join(f"{edge.source.id} -{'/'.join(edge.events) or '(eventless)'}->" for edge in cycle)
            self.add(
                state,
                f"is in a loop that no caller input breaks: {path} {cycle[0].source.id}; "
                "it could repeat forever",
                "retries belong in Ask(retries=N): when they run out, no_input/no_match must lead somewhere "
                f"new, e.g. `{cycle[-1].events[0] if cycle[-1].events else 'no_input'} = "
                f"{cycle[-1].source.id}.to({self.ending_name()})`",
                event=cycle[0].events[0] if cycle[0].events else None,
            )


def _reach(start: State, edges: Sequence[Edge], follow: Any) -> set[str]:
    seen = {start.id}
    todo = [start]
    while todo:
        current = todo.pop()
        for edge in edges:
            if (
                edge.source is current
                and edge.target is not None
                and follow(edge)
                and edge.target.id not in seen
            ):
                seen.add(edge.target.id)
                todo.append(edge.target)
    return seen


def _find_cycle(start: State, edges: Sequence[Edge]) -> list[Edge] | None:
    """A cycle through ``start`` (as its edges), or None."""
    path: list[Edge] = []
    visited: set[str] = set()

    def walk(state: State) -> bool:
        for edge in edges:
            if edge.source is not state or edge.target is None:
                continue
            path.append(edge)
            if edge.target is start:
                return True
            if edge.target.id not in visited:
                visited.add(edge.target.id)
                if walk(edge.target):
                    return True
            path.pop()
        return False

    return path if walk(start) else None


def listing(items: Iterable[str], last: str = "and") -> str:
    """``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def did_you_mean(name: str, candidates: Iterable[str], *, braces: bool = False) -> str:
    """``did you mean 'x'?`` for the closest of ``candidates``, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"did you mean {{{close[0]}}}?" if braces else f"did you mean {close[0]!r}?"


_listing = listing
_did_you_mean = did_you_mean


def check_flow(flow: type[StateChart[Any]]) -> list[FlowProblem]:
    """Every problem with a built flow class (empty when it is sound)."""
    return _Checker(flow).run()
