"""``VoiceFlow``: a python-statemachine ``StateChart`` that speaks, listens, and cannot hang.

A flow is a class. Its states are the kinds in :mod:`voicefsm.flow.states`, its transitions
use the python-statemachine DSL, and what it collects lives in ``slots_model``::

    class Booking(VoiceFlow):
        slots_model = Appointment
        greet = Say("Hi, this is Bright Smile Dental.", initial=True)
        ask_day = Ask("Which day would you like?", slot="day")
        booked = Hangup("You're booked. Goodbye!")
        give_up = Hangup("Sorry, I couldn't get that.")
        spoken = greet.to(ask_day)
        filled = ask_day.to(booked)
        no_input = ask_day.to(give_up)
        no_match = ask_day.to(give_up)

Before python-statemachine builds the class, the metaclass adds the exits every flow needs
and most never write, as real states and transitions (so the diagram, the spec and coverage
show them): ``disconnected`` from every state that is not final to a silent final state
``hung_up``; ``tts_error``, ``stt_error``, a step's ``failure`` and ``timed_out``, and
``error.execution`` to ``failed``, a Hangup that apologises; ``limit_reached`` (a call limit:
``max_duration_s``, ``max_state_entries``, ``max_same_state``) to ``limit``, a polite goodbye.
Which events get a default exit is each state kind's to say (``StateKind.default_exits``).
A flow that declares its own transition for a state and event keeps it. Then the
static checks (:mod:`voicefsm.flow.checks`) run, and a flow that could strand a caller is
rejected with :class:`~voicefsm.flow.errors.FlowDefinitionError`.

Flows always run on the async engine and unknown events raise instead of being ignored. Flow
code that raises makes ``send`` raise with the chart left where it was; the runtime logs the
traceback and sends ``error.execution``, which by default apologises and hangs up.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel
from statemachine import State, StateChart
from statemachine.engines.async_ import AsyncEngine
from statemachine.event import Event
from statemachine.event_data import TriggerData
from statemachine.exceptions import InvalidDefinition
from statemachine.factory import StateMachineMetaclass
from statemachine.orderedset import OrderedSet
from statemachine.spec_parser import names_in_boolean_expr
from statemachine.transition import Transition
from statemachine.transition_list import TransitionList

from voicefsm.flow.checks import check_flow
from voicefsm.flow.errors import FlowDefinitionError, FlowProblem, UnknownEventError
from voicefsm.flow.kinds import DISCONNECTED, ERROR_EXECUTION, LIMIT_REACHED, Hangup, kind_for
from voicefsm.flow.kinds.base import FAILED, HUNG_UP, LIMIT
from voicefsm.flow.slots import NoSlots

APOLOGY = "Sorry, something went wrong on our side. Please call again later."
LIMIT_GOODBYE = "I'm sorry, we have to end this call now. Please call again. Goodbye!"
#: The default exit of the events every state that is not final receives.
_ALWAYS_EXITS: dict[str, str] = {DISCONNECTED: HUNG_UP, ERROR_EXECUTION: FAILED, LIMIT_REACHED: LIMIT}


@dataclass(frozen=True, slots=True)
class Step:
    """One transition taken: ``error`` is the exception behind an ``error.execution``."""

    source: str
    event: str
    target: str
    error: BaseException | None = None


#: Whether a flow class has eventless transitions (weakly keyed: a reloaded flow's old class can go).
_EVENTLESS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
#: A flow class's activation transitions, by the ids of the states they enter (a resumed call
#: starts elsewhere than a new one).
_INITIAL: weakref.WeakKeyDictionary[type, dict[tuple[int, ...], list[Transition]]] = (
    weakref.WeakKeyDictionary()
)


class _VoiceEngine(AsyncEngine):
    """python-statemachine's async engine, writing down every transition a microstep takes.

    A listener's ``after_transition`` did this before: the engine then ran an awaited callback
    (argument binding, a coroutine and an ``asyncio.gather`` task) for every transition. Here the
    step is written down where the engine completes the transition, for the same transitions:
    those whose target states were entered (even when an ``after`` callback raises afterwards),
    not the initial activation.
    """

    _voice_entered: bool = False

    def __init__(self, sm: StateChart) -> None:  # type: ignore[type-arg]
        super().__init__(sm)
        # A chart without eventless transitions (voice flows have none unless a flow writes one) need
        # not look for them twice per event in every state it is in. Worked out once per flow class.
        chart = type(sm)
        eventless = _EVENTLESS.get(chart)
        if eventless is None:
            eventless = _EVENTLESS[chart] = any(
                transition.is_eventless for state in chart.states for transition in state.transitions
            )
        self._voice_eventless = eventless

    def _initial_transitions(self, trigger_data: TriggerData) -> list[Transition]:
        # The engine builds a source State and a Transition per state it activates, on every
        # activation: a third of its cost (58 -> 39 us on the echo flow). They hold nothing of one
        # call (their callbacks are cleared), so each flow class builds them once per set of
        # initial states.
        configuration = self.sm._get_initial_configuration()  # type: ignore[no-untyped-call]
        built = _INITIAL.setdefault(type(self.sm), {})
        key = tuple(id(state) for state in configuration)
        transitions = built.get(key)
        if transitions is None:
            transitions = built[key] = super()._initial_transitions(trigger_data)  # type: ignore[no-untyped-call]
        return transitions

    async def select_eventless_transitions(self, trigger_data: TriggerData) -> OrderedSet[Transition]:
        if not self._voice_eventless:
            return OrderedSet()
        found: OrderedSet[Transition] = await super().select_eventless_transitions(trigger_data)
        return found

    async def _enter_states(
        self,
        enabled_transitions: list[Transition],
        trigger_data: TriggerData,
        states_to_exit: Any,
        previous_configuration: Any,
    ) -> Any:
        result = await super()._enter_states(
            enabled_transitions, trigger_data, states_to_exit, previous_configuration
        )
        self._voice_entered = True
        return result

    async def microstep(self, transitions: list[Transition], trigger_data: TriggerData) -> Any:
        self._voice_entered = False
        try:
            return await super().microstep(transitions, trigger_data)
        finally:
            if self._voice_entered:
                self._voice_entered = False
                flow: VoiceFlow = self.sm  # type: ignore[assignment]
                event = str(trigger_data.event or "")
                error = trigger_data.kwargs.get("error")
                error = error if isinstance(error, BaseException) else None
                for transition in transitions:
                    flow._record_step(event, transition.source, transition.target or transition.source, error)


class VoiceFlowMeta(StateMachineMetaclass):
    """Adds the default exits before python-statemachine builds a flow, then checks the result."""

    def __init__(cls, name: str, bases: tuple[type], attrs: dict[str, Any]) -> None:
        if attrs.get("_voicefsm_base") or not any(isinstance(v, State) for v in attrs.values()):
            super().__init__(name, bases, attrs)  # VoiceFlow itself, or an abstract helper base
            return
        frame = sys._getframe(1)  # the module running the `class` statement
        frame_path, frame_line = frame.f_code.co_filename, frame.f_lineno
        path = frame_path
        problems: list[FlowProblem] = []

        def problem(message: str, fix: str, state: str | None = None, line: int | None = None) -> None:
            problems.append(FlowProblem(path, line or frame_line, name, state, None, message, fix))

        for base in bases:
            if len(getattr(base, "states", ())):
                problem(
                    f"subclasses the concrete flow {base.__name__}, whose states would be shared",
                    "subclass VoiceFlow directly; share prompts or helper methods through a mixin",
                )
        for key, value in attrs.items():
            if isinstance(value, State) and (value.states or value.history):
                problem(
                    "is a compound or parallel state; voice flows are flat for now",
                    "flatten it into top-level Say/Ask states",
                    state=key,
                )
        if problems:
            raise FlowDefinitionError(problems)

        attrs = dict(attrs)
        apology = attrs.get("apology", getattr(cls, "apology", APOLOGY))
        goodbye = attrs.get("limit_goodbye", getattr(cls, "limit_goodbye", LIMIT_GOODBYE))
        endings = {HUNG_UP: (None, "hung_up"), FAILED: (apology, "error"), LIMIT: (goodbye, "limit")}
        defaults, added_states = _add_default_exits(attrs, endings, path, frame_line)
        try:
            super().__init__(name, bases, attrs)
        except InvalidDefinition as exc:
            raise FlowDefinitionError(
                [
                    FlowProblem(
                        path, frame_line, name, None, None, f"python-statemachine rejected it: {exc}", ""
                    )
                ]
            ) from exc

        cls._voice_source = (path, frame_line)
        cls._default_transitions = frozenset(defaults)
        cls._default_states = frozenset(added_states)
        cls._event_ids = frozenset(event.id for event in cls._events)
        if cls.__dict__.get("uses_stt", getattr(cls, "uses_stt", None)) is None:
            cls.uses_stt = not any(kind_for(s).needs_raw_audio for s in cls.states)
        problems += _resolve_kinds(cls, path)
        problems += check_flow(cls)  # type: ignore[arg-type]
        if not problems:
            problems += _callback_problems(cls, path, frame_line)
        if problems:
            raise FlowDefinitionError(sorted(problems, key=lambda p: (p.line, p.state or "")))


#: ``await runner(label, where, function, args, kwargs)``: how the runtime runs user sync callbacks.
CallbackRunner = Callable[[str, str, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]]

_FRAMEWORK_MODULES = ("voicefsm.", "statemachine")


def _user_function(cls: type, name: str) -> Callable[..., Any] | None:
    """The function a flow class's user code defines as ``name``, or None."""
    value = inspect.getattr_static(cls, name, None)
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if not inspect.isfunction(value):
        return None
    module = getattr(value, "__module__", "") or ""
    return None if module.startswith(_FRAMEWORK_MODULES) else value


def _user_callback(cls: type, meta: Any) -> tuple[str, str] | None:
    """(label, file:line) when the callback ``meta`` describes is user-written flow code."""
    function: Any = None
    if callable(meta.func) and not isinstance(meta.func, str):
        module = getattr(meta.func, "__module__", "") or ""
        if inspect.isfunction(meta.func) and not module.startswith(_FRAMEWORK_MODULES):
            function = meta.func
    else:
        name = str(meta.attr_name or meta.func or "")
        names = (
            names_in_boolean_expr(name) if getattr(meta, "may_contain_boolean_expression", False) else {name}
        )
        for candidate in sorted(names):
            function = _user_function(cls, candidate) or function
    if function is None:
        return None
    code = function.__code__
    return str(meta.attr_name or function.__name__), f"{code.co_filename}:{code.co_firstlineno}"


#: Per flow class: which callback specs are user code ((label, where)) and which are not (None).
#: Looking that up costs ``inspect.getattr_static`` per callback, so it is done once per spec.
_USER_CALLBACKS: weakref.WeakKeyDictionary[type, weakref.WeakKeyDictionary[Any, tuple[str, str] | None]] = (
    weakref.WeakKeyDictionary()
)


def _route_user_callbacks(flow: VoiceFlow) -> None:
    """Send every user-written guard, action and hook through the runtime's callback runner
    (which runs sync ones off the loop and names every one for the watchdog).

    voicefsm's own callbacks (``yes``, ``no``, the step recorder) stay inline. Without a runner
    (a flow used outside the runtime) everything runs inline, as python-statemachine would.
    """
    registry: Any = getattr(flow, "_callbacks", None)
    cls = type(flow)
    known = _USER_CALLBACKS.get(cls)
    if known is None:
        known = _USER_CALLBACKS[cls] = weakref.WeakKeyDictionary()
    for executor in getattr(registry, "_registry", {}).values():
        for wrapper in executor:
            if getattr(wrapper, "_voicefsm_routed", False):
                continue
            meta = wrapper.meta
            try:
                found = known[meta]
            except KeyError:  # python-statemachine shares a class's specs between its instances
                found = known[meta] = _user_callback(cls, meta)
            if found is not None:
                wrapper._callback = _routed(flow, wrapper._callback, *found)
                wrapper._voicefsm_routed = True


def _routed(flow: VoiceFlow, original: Callable[..., Any], label: str, where: str) -> Callable[..., Any]:
    async def routed(*args: Any, **kwargs: Any) -> Any:
        runner = flow._callback_runner
        value = (
            original(*args, **kwargs)
            if runner is None
            else await runner(label, where, original, args, kwargs)
        )
        if inspect.isawaitable(value):
            value = await value
        return value

    return routed


def _resources_for(flow_cls: type, given: Mapping[str, object] | None) -> Any:
    """The flow's resources container (:class:`voicefsm.flow.resources.Resources`) over ``given``."""
    from voicefsm.flow.resources import Resources

    return Resources.for_flow(flow_cls, given)


def _callback_problems(cls: Any, path: str, line: int) -> list[FlowProblem]:
    """Anything else python-statemachine only finds when it builds an instance: build one now."""
    try:
        cls()
    except InvalidDefinition as exc:
        message = f"names a guard or callback that does not exist: {exc}"
        fix = "define that method on the flow, or correct the name in cond=/unless=/on="
        return [FlowProblem(path, line, cls.__name__, None, None, message, fix)]
    except TypeError:
        pass  # an __init__ that needs arguments: checked when the runtime builds it
    return []


def _event_ids_for(key: str) -> list[str]:
    """Event ids an attribute name declares (python-statemachine also adds the dotted form of error_*)."""
    if key.startswith(("error_", "done_state_", "done_invoke_")):
        dotted = key.replace("_", ".", 1) if key.startswith("error_") else None
        if key.startswith("done_state_"):
            dotted = "done.state." + key.removeprefix("done_state_")
        elif key.startswith("done_invoke_"):
            dotted = "done.invoke." + key.removeprefix("done_invoke_")
        return [key, dotted] if dotted else [key]
    return [key]


def _handled_events(attrs: Mapping[str, Any]) -> dict[int, set[str]]:
    """Event ids per transition (by id()), from the attribute names the transitions are assigned to."""
    handled: dict[int, set[str]] = {}
    for key, value in attrs.items():
        if isinstance(value, Event) and value._transitions is not None:
            ids = [value.id] if value._has_real_id else _event_ids_for(key)
            transitions: Any = value._transitions
        elif isinstance(value, TransitionList | Transition):
            ids, transitions = _event_ids_for(key), value if isinstance(value, TransitionList) else [value]
        else:
            continue
        for transition in transitions:
            handled.setdefault(id(transition), set()).update(ids)
    return handled


def _handles(transition: Transition, extra_ids: set[str], event: str) -> bool:
    descriptors = [str(e) for e in transition.events] + sorted(extra_ids)
    return any(Event(id=d).match(event) for d in descriptors)


def _add_default_exits(
    attrs: dict[str, Any], endings: Mapping[str, tuple[str | None, str]], path: str, line: int
) -> tuple[list[Transition], list[str]]:
    """Add the default final states and the transitions to them that the flow did not declare.

    Which events get a default exit, and to which state, is each state's kind's
    ``default_exits`` (plus disconnected -> hung_up and error.execution -> failed for all).
    ``endings`` maps each default state's name to its (prompt, outcome). Returns the transitions
    and the names of the states added.
    """
    handled = _handled_events(attrs)
    states = [(key, value) for key, value in attrs.items() if isinstance(value, State)]
    needs: list[tuple[State, str, str]] = []
    for _, state in states:
        if state.final:
            continue
        exits = {**_ALWAYS_EXITS, **kind_for(state).default_exits}
        for event, exit_to in exits.items():
            if not any(_handles(t, handled.get(id(t), set()), event) for t in state.transitions):
                needs.append((state, event, exit_to))

    targets: dict[str, State] = {}
    added_states: list[str] = []
    for key, (prompt, outcome) in endings.items():
        wanted = any(target_name == key for _, _, target_name in needs)
        existing = attrs.get(key)
        if isinstance(existing, State) and existing.final:
            targets[key] = existing
        elif wanted and existing is None:
            ending = Hangup(prompt, outcome=outcome)
            ending.path, ending.line = path, line
            attrs[key] = targets[key] = ending
            added_states.append(key)
    added: list[Transition] = []
    for source, event, key in needs:
        target = targets.get(key)
        if target is None:
            continue  # the name is taken by something else; the checks report the missing exit
        added.extend(source.to(target, event=event))
    return added, added_states


def _resolve_kinds(cls: Any, path: str) -> list[FlowProblem]:
    """Let each state finish its setup against the built class (an Ask resolves its slot's expectation)."""
    problems: list[FlowProblem] = []
    for state in cls.states:
        for message in kind_for(state).resolve(cls):
            line = getattr(state, "line", 0)
            problems.append(FlowProblem(path, line, cls.__name__, state.id, None, message, ""))
    return problems


class VoiceFlow(StateChart, metaclass=VoiceFlowMeta):  # type: ignore[type-arg]
    """Base class of every flow. Subclass it and declare states, transitions and ``slots_model``.

    Instances are per call: ``slots`` (an instance of ``slots_model``), ``caller`` (the caller's
    number, when known), ``parameters`` (the call's custom parameters), ``resources`` (what the
    flow's steps use, by name: ``self.resources.calendar``) and ``steps`` (every transition taken
    so far) are there for guards, actions and steps to read.

    Guards and actions receive the event's payload by parameter name: ``filled(value, slot, text,
    via)`` (via is "speech" or "dtmf"), ``no_match(reason, text)``, ``no_input(reason)``,
    ``spoken(interrupted)``, ``tts_error(reason)``, ``stt_error(reason)``, ``disconnected(reason)``,
    ``error.execution(error)``. ``yes`` and ``no`` are ready-made guards for yes/no answers.
    """

    _voicefsm_base: ClassVar[bool] = True

    #: The pydantic model of what the flow collects; every field needs a default.
    slots_model: ClassVar[type[BaseModel]] = NoSlots
    #: Whether the call needs speech recognition; None means "unless the flow has an Echo state".
    uses_stt: ClassVar[bool | None] = None
    #: What the default ``failed`` state says before hanging up.
    apology: ClassVar[str] = APOLOGY

    #: Call limits (None: no limit). Reaching one sends ``limit_reached`` (payload ``reason``), which
    #: by default goes to ``limit``, a final state that says ``limit_goodbye`` (outcome "limit").
    #: The longest a call may last, in seconds on the runtime's clock.
    max_duration_s: ClassVar[float | None] = 600.0
    #: The most states a call may enter (a loop guard, like Twilio Studio's 1,000 steps).
    max_state_entries: ClassVar[int | None] = 1000
    #: The most times in a row the same state may be entered (re-entered from itself).
    max_same_state: ClassVar[int | None] = 10
    #: What the default ``limit`` state says before hanging up.
    limit_goodbye: ClassVar[str] = LIMIT_GOODBYE

    #: Flow code that raises (a guard, an action, an entry callback) makes ``send`` raise and the
    #: transition not happen; the runtime logs it and sends ``error.execution``. (python-statemachine's
    #: default would count a raising guard as false and take the next transition, losing the error.)
    catch_errors_as_events: ClassVar[bool] = False  # type: ignore[misc]

    # voicefsm's checks replace these three, with messages that name the state and the fix.
    validate_disconnected_states: ClassVar[bool] = False
    validate_trap_states: ClassVar[bool] = False
    validate_final_reachability: ClassVar[bool] = False

    _voice_source: ClassVar[tuple[str, int]] = ("<unknown>", 0)
    _default_transitions: ClassVar[frozenset[Transition]] = frozenset()
    _default_states: ClassVar[frozenset[str]] = frozenset()
    _event_ids: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        slots: BaseModel | None = None,
        caller: str | None = None,
        parameters: Mapping[str, str] | None = None,
        listeners: Sequence[object] | None = None,
        resources: Mapping[str, object] | None = None,
        **kwargs: Any,
    ) -> None:
        self.resources = _resources_for(type(self), resources)
        self.slots = slots if slots is not None else self.slots_model()
        self.caller = caller
        self.parameters = dict(parameters or {})
        self.steps: list[Step] = []
        #: Set by the runtime: runs a user-written sync callback off the event loop (None: inline).
        self._callback_runner: CallbackRunner | None = None
        super().__init__(listeners=list(listeners or ()), **kwargs)
        _route_user_callbacks(self)

    def _get_engine(self) -> AsyncEngine:
        """Always the async engine (the runtime awaits user callbacks via its runner); it records steps."""
        return _VoiceEngine(self)

    # -- guards every flow can use ----------------------------------------------------------

    def yes(self, value: object = None) -> bool:
        """Guard: the caller said yes (the filled value is True)."""
        return value is True

    def no(self, value: object = None) -> bool:
        """Guard: the caller said no (the filled value is False)."""
        return value is False

    # -- events -------------------------------------------------------------------------------

    def send(self, event: str, *args: Any, **kwargs: Any) -> Any:
        """Send ``event``; raises UnknownEventError for an event the flow does not declare."""
        if event not in self._event_ids and not any(declared.match(event) for declared in type(self)._events):
            raise UnknownEventError(type(self).__name__, event, sorted(self._event_ids))
        return super().send(event, *args, **kwargs)

    @property
    def current(self) -> State:
        """The (class-level) state the flow is in."""
        atomic = [s for s in self.configuration if s.is_atomic]
        (active,) = atomic or [s for s in (self.initial_state,) if s is not None]
        state: State = type(self).states_map[active.value]
        return state

    def _record_step(self, event: str, source: State, target: State, error: BaseException | None) -> None:
        self.steps.append(Step(source.id, event, target.id, error))
