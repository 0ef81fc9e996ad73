"""The state-kind seam: what every kind of state tells the rest of voicefsm, and what it may ask of it.

A kind is a subclass of :class:`StateKind` (itself a python-statemachine ``State``). It declares

- the events a state of the kind receives (:attr:`~StateKind.waits_for`), which of them get a
  default exit when the flow leaves them out (:attr:`~StateKind.default_exits`; the metaclass adds
  them), and which carry no progress (:attr:`~StateKind.quiet_events`, for the loop check);
- its static checks (:meth:`~StateKind.argument_problems`, :meth:`~StateKind.flow_problems`) and
  its templates (:meth:`~StateKind.templates`);
- its spec entry (:meth:`~StateKind.spec_fields`) and graph shape (:attr:`~StateKind.graph_shape`);
- the faults the fault runs attack it with (:attr:`~StateKind.fault_attacks`);
- its runtime :class:`Activity` (:meth:`~StateKind.activity`): started when the chart enters the
  state, handed every message for it, stopped (its tasks cancelled and awaited) when the chart
  leaves; a final kind's :meth:`~StateKind.finish` runs once the chart has ended.

The runtime offers an activity the :class:`ActivityHost` protocol (send an event to the chart,
speak, render a template, the clock, the line's capabilities). It never asks which kind a state
is. A user's own kind is a class like the built-in ones, defined anywhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from statemachine import State

from voicefsm.flow.errors import FlowError

if TYPE_CHECKING:
    from voicefsm.flow.expect_base import Expectation

SPOKEN = "spoken"
FILLED = "filled"
NO_INPUT = "no_input"
NO_MATCH = "no_match"
TTS_ERROR = "tts_error"
STT_ERROR = "stt_error"
DISCONNECTED = "disconnected"
ERROR_EXECUTION = "error.execution"
DONE = "done"
FAILURE = "failure"
TIMED_OUT = "timed_out"
LIMIT_REACHED = "limit_reached"
#: Answering-machine detection says a machine answered and its greeting has ended (payload
#: ``answered_by``: ``machine_end_beep``, ``machine_end_silence`` or ``machine_end_other``). Sent only
#: to a flow that has a transition on it, from whatever state the call is in; no default exit.
MACHINE_ANSWERED = "machine_answered"

#: Every event the built-in kinds and the runtime send to a chart (a state receives only its kind's).
RUNTIME_EVENTS: tuple[str, ...] = (
    SPOKEN, FILLED, NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR, DISCONNECTED, ERROR_EXECUTION,
    DONE, FAILURE, TIMED_OUT, LIMIT_REACHED, MACHINE_ANSWERED,
)  # fmt: skip
#: Events every state that is not final can receive, whatever its kind.
ALWAYS_RECEIVED: tuple[str, ...] = (ERROR_EXECUTION, LIMIT_REACHED, MACHINE_ANSWERED)

#: The final states the metaclass adds when a default exit needs them.
HUNG_UP = "hung_up"
FAILED = "failed"
LIMIT = "limit"

#: On a simulated clock, time stands still while flow code works off the clock (a thread, a socket)
#: for at most this many real seconds; then it may move again (so code waiting on nothing times out).
HOLD_REAL_S = 0.5

#: Every fault the fault runs know (a kind lists the ones that apply to it).
ALL_FAULTS: tuple[str, ...] = ("disconnected", "tts_error", "stt_error", "no_input", "garbage")


def declared_at(module: str) -> tuple[str, int]:
    """The file and line of the flow code that created a state (the first frame outside ``module``
    and outside this package)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and (
        frame.f_globals.get("__name__") == module
        or str(frame.f_globals.get("__name__", "")).startswith(__package__ or "voicefsm.flow.kinds")
    ):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


class FlowStuckError(FlowError):
    """The chart took no transition on an event its state was waiting for, so the call could not go on."""

    def __init__(self, flow: str, state: str, event: str) -> None:
        super().__init__(flow, state, event)
        self.flow, self.state, self.event = flow, state, event

    def __str__(self) -> str:
        return f"{self.flow}.{self.state} took no transition on {self.event}, so the call could not go on"


# -- messages an activity receives ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerSpeaking:
    """The recognizer hears the caller (an interim transcript): enough to barge in."""


@dataclass(frozen=True, slots=True)
class CallerSaid:
    """The caller said ``text`` (a final transcript; blank when the recognizer gave up on noise).

    ``via`` is ``"text"`` when it was typed (terminal chat, the browser's text box), not spoken.
    """

    text: str
    via: Literal["speech", "text"] = "speech"


@dataclass(frozen=True, slots=True)
class CallerKey:
    """The caller pressed ``digit``."""

    digit: str


@dataclass(frozen=True, slots=True)
class SttFailed:
    """Speech recognition failed; the runtime has reported it."""

    reason: str


@dataclass(frozen=True, slots=True)
class PromptEnded:
    """A prompt started by :meth:`ActivityHost.speak` ended: played, interrupted, failed or cut off."""

    token: int
    interrupted: bool = False
    error: str | None = None
    disconnected: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer of the activity ran out."""

    token: int
    kind: str


Message = Any  # one of the above, or a kind's own message type (with a ``token``)


# -- what the runtime offers ----------------------------------------------------------------------


class ClockLike(Protocol):
    """The runtime's conversation clock (virtual in tests)."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` on this clock."""
        ...


class ActivityHost(Protocol):
    """What the flow runtime offers the activity of the state the chart is in."""

    @property
    def flow(self) -> Any:
        """The flow instance (its ``slots``, ``caller``, methods)."""
        ...

    @property
    def clock(self) -> ClockLike:
        """The conversation clock: every timer of an activity runs on it."""
        ...

    @property
    def limits(self) -> Any:
        """The runtime's timing rules (``inter_digit_s``...)."""
        ...

    @property
    def time_is_simulated(self) -> bool:
        """True on a simulated clock (tests, chat): time moves only when everything waits on the clock."""
        ...

    @property
    def stubs(self) -> Mapping[str, Any]:
        """Test-kit replacements of step bodies, by state id or method name (empty in production)."""
        ...

    @property
    def stt_failed(self) -> str | None:
        """Why speech recognition failed earlier in the call (held until a state listens), or None."""
        ...

    def next_token(self) -> int:
        """A fresh token for a task's messages (a message with a stale token is dropped)."""
        ...

    def time_left(self) -> float | None:
        """Seconds (on the clock) until the call's ``max_duration_s``, or None without one.

        An activity that may wait long without any message (a step) arms a timer for it and then
        calls :meth:`check_limits`.
        """
        ...

    async def check_limits(self, *, due: bool = False) -> None:
        """End the call politely (``limit_reached``) if it has lasted ``max_duration_s``
        (``due=True``: a timer armed with :meth:`time_left` says so)."""
        ...

    def post(self, message: Message) -> None:
        """Put ``message`` in the runtime's mailbox; it comes back to :meth:`Activity.handle`."""
        ...

    async def send(self, event: str, **payload: Any) -> None:
        """Send ``event`` to the chart. A flow that takes no transition on it is failed, not left hanging."""
        ...

    def render(self, template: str) -> str:
        """Fill ``template`` from the slots and built-ins; raises TemplateError (already reported)."""
        ...

    async def speak(self, token: int, text: str, label: str, *, then: str | None = None) -> None:
        """Speak ``text`` (for state ``label``); posts :class:`PromptEnded` (``token``) when it ends.

        ``then``: the event the state will send once the prompt has played (Say: ``spoken``); the
        prompt it leads to, when already certain, is synthesized while this one plays (see
        :meth:`speak_ahead`).
        """
        ...

    def speak_ahead(self, event: str) -> None:
        """The state will send ``event`` next: start synthesizing the prompt it leads to, if that is
        certain now (one unguarded transition, the prompt's fields filled). A no-op when speaking
        ahead is off; a prompt of a path not taken is never played."""
        ...

    async def cancel_ahead(self) -> None:
        """The caller's words may change the path: stop a synthesis started ahead that still runs."""
        ...

    def set_hints(self, expectation: Expectation) -> None:
        """Give the recognizer the phrases ``expectation`` accepts."""
        ...

    def caller_turn(self, text: str, start: float, via: str, state: str) -> None:
        """Record what the caller keyed (speech turns are recorded by the runtime)."""
        ...

    def caller_quiet(self) -> None:
        """The caller has been silent: forget when they last started speaking."""
        ...

    def notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every flow listener (on_slot, on_step...)."""
        ...

    def fail(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Log and report a failure (kind: tts, stt, flow, action, step)."""
        ...

    def elapsed(self) -> float:
        """Seconds since the flow started, on the runtime's clock."""
        ...

    def today(self) -> dt.date:
        """What "today" means for parsing dates."""
        ...

    def set_builtin(self, name: str, value: str) -> None:
        """Set what the built-in ``{name}`` (``reason``, ``error``) says in the next prompts."""
        ...

    async def run_flow_code(self, function: Callable[..., Any], *args: Any, label: str = "") -> Any:
        """Call flow code: awaited when async, on the step pool when sync (so it cannot block the loop)."""
        ...

    # the line's capabilities, for final states

    def line_open(self) -> bool:
        """True while the caller is still on the line."""
        ...

    async def say_last(self, text: str, label: str) -> None:
        """Speak without a mailbox to answer to (the chart is final, only the line is left)."""
        ...

    async def transfer(self, number: str) -> None:
        """Transfer the call to ``number`` (unless the caller has already gone)."""
        ...

    async def send_sms(self, to: str, body: str) -> None:
        """Text ``body`` to ``to``."""
        ...

    async def echo(self, max_s: float) -> None:
        """Send the caller's audio straight back until hang-up or ``max_s``."""
        ...


# -- the tasks of an activity ---------------------------------------------------------------------


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and wait until they have finished (a cancellation of the caller still propagates)."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was reported where it happened


class Activity:
    """What runs while a state is active. Subclass it for a kind; the base owns the tasks and timers.

    :meth:`enter` starts the work; :meth:`handle` gets every message for the state (caller input,
    the results of the activity's own tasks); :meth:`stop` cancels and awaits every task started
    with :meth:`spawn` or :meth:`arm`. A task posts its result with a token; :meth:`claim` says
    whether a message is still current.
    """

    def __init__(self, state: StateKind | State, host: ActivityHost) -> None:
        self.state = state
        self.host = host
        self._tasks: dict[str, tuple[int, asyncio.Task[Any]]] = {}
        self._retired: list[asyncio.Task[Any]] = []
        self._deadlines: dict[str, float] = {}
        self._timer_kinds: dict[str, str] = {}

    async def enter(self) -> None:
        """Start the state's work (the chart has just entered it)."""

    async def handle(self, message: Message) -> None:
        """One message for this state: caller input or a result of one of its tasks."""

    async def stop(self, *, hung_up: bool = False) -> None:
        """Cancel and await every task of this state (``hung_up``: the caller has gone)."""
        tasks = [task for _, task in self._tasks.values()] + self._retired
        self._tasks, self._retired = {}, []
        await cancel_and_wait(*tasks)

    # -- helpers for subclasses ---------------------------------------------------------------

    def spawn(self, slot: str, make: Callable[[int], Coroutine[Any, Any, Any]]) -> int:
        """Run ``make(token)`` as this activity's ``slot`` task (replacing, and cancelling, an older one)."""
        self.drop(slot)
        token = self.host.next_token()
        task = asyncio.create_task(make(token), name=f"flow-{slot}-{self.state.id}")
        self._tasks[slot] = (token, task)
        return token

    def drop(self, slot: str) -> None:
        """Cancel the ``slot`` task now (awaited by :meth:`stop`); its late messages are not claimed."""
        entry = self._tasks.pop(slot, None)
        if entry is not None:
            entry[1].cancel()
            self._retired = [task for task in self._retired if not task.done()] + [entry[1]]

    async def cancel(self, slot: str) -> None:
        """Cancel the ``slot`` task and wait until it has stopped."""
        entry = self._tasks.pop(slot, None)
        if entry is not None:
            await cancel_and_wait(entry[1])

    def running(self, slot: str) -> bool:
        """True while the ``slot`` task exists and has not finished."""
        entry = self._tasks.get(slot)
        return entry is not None and not entry[1].done()

    def arm(self, kind: str, seconds: float, *, slot: str = "timer") -> None:
        """Start a timer that posts TimerFired(kind); re-arming the same kind only moves its deadline."""
        self._deadlines[slot] = self.host.clock.now() + seconds
        entry = self._tasks.get(slot)
        if entry is not None and self._timer_kinds.get(slot) == kind and not entry[1].done():
            return
        self._timer_kinds[slot] = kind
        self.spawn(slot, lambda token: self._run_timer(token, kind, slot))

    def disarm(self, slot: str = "timer") -> None:
        """Stop a timer."""
        self.drop(slot)

    async def _run_timer(self, token: int, kind: str, slot: str) -> None:
        clock = self.host.clock
        while (remaining := self._deadlines[slot] - clock.now()) > 0:
            await clock.sleep(remaining)
        self.host.post(TimerFired(token, kind))

    def claim(self, message: Message, slot: str | None = None) -> bool:
        """True (once) when ``message`` comes from the current task of ``slot`` (any slot if None)."""
        token = getattr(message, "token", None)
        for name, (current, _) in list(self._tasks.items()):
            if current == token and (slot is None or name == slot):
                del self._tasks[name]
                return True
        return False


class StuckActivity(Activity):
    """The activity of a state that has nothing to do but was not left at once: it is stuck."""

    async def enter(self) -> None:
        stuck = FlowStuckError(type(self.host.flow).__name__, self.state.id, "(eventless)")
        self.host.fail("flow", str(stuck), stuck)
        await self.host.send(ERROR_EXECUTION, error=stuck)


# -- the kind -------------------------------------------------------------------------------------


class StateKind(State):
    """A state with voice behaviour, the base of every kind. ``prompt`` is a template (slots, built-ins)."""

    #: The kind's name in the spec, the graph and messages.
    kind: ClassVar[str] = "state"
    #: The events a state of this kind receives and so must handle (besides error.execution and
    #: limit_reached, which every state that is not final receives).
    waits_for: tuple[str, ...] = ()
    #: Events that get a default exit when the flow has none: event -> default final state
    #: (``hung_up``, ``failed`` or ``limit``). disconnected, error.execution and limit_reached
    #: always do.
    default_exits: ClassVar[Mapping[str, str]] = {}
    #: Events that carry no caller input and no progress: a loop made only of them is reported.
    quiet_events: ClassVar[frozenset[str]] = frozenset()
    #: Events that mean the call broke rather than that the conversation moved on.
    aborting_events: ClassVar[frozenset[str]] = frozenset()
    #: The faults the fault runs inject at a state of this kind.
    fault_attacks: ClassVar[tuple[str, ...]] = ALL_FAULTS
    #: Graphviz node attributes that draw the kind.
    graph_shape: ClassVar[str] = ""
    #: A plain decision state moves on by an eventless transition; every other kind waits.
    eventless: ClassVar[bool] = False
    #: Whether a state of this kind needs the caller's raw audio (so the flow runs without STT).
    needs_raw_audio: ClassVar[bool] = False
    #: The outcome a call ending here has (final kinds).
    default_outcome: ClassVar[str] = "completed"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        name: str = "",
        initial: bool = False,
        final: bool = False,
        barge_in: bool = True,
        enter: Any = None,
        exit: Any = None,
    ) -> None:
        super().__init__(name=name, initial=initial, final=final, enter=enter, exit=exit)
        self.prompt = prompt
        self.barge_in = barge_in
        self.outcome: str | None = None
        self.path, self.line = declared_at(__name__)

    # -- what validate asks ---------------------------------------------------------------------

    def events_received(self) -> tuple[str, ...]:
        """Every event the runtime can send while in this state."""
        if self.final:
            return ()
        return (*self.waits_for, *ALWAYS_RECEIVED)

    def templates(self) -> dict[str, str]:
        """Every template of this state by what it is (``prompt``, ``reprompt 1``, ``sms body``...)."""
        return {"prompt": self.prompt} if self.prompt else {}

    def argument_problems(self) -> list[tuple[str, str]]:
        """Problems with this state's own arguments, as (message, fix) pairs."""
        return []

    def flow_problems(self, flow: Any) -> list[tuple[str, str]]:
        """Problems of this state in ``flow`` (its slots model, its methods...), as (message, fix) pairs."""
        return []

    def resolve(self, flow: Any) -> list[str]:
        """Finish setting up against the flow class once it is built; returns problems (message only)."""
        return []

    # -- what the spec and graph ask ------------------------------------------------------------

    def spec_fields(self) -> dict[str, Any]:
        """This state's spec entry beyond id, kind, initial, final and receives."""
        fields: dict[str, Any] = {"line": self.line, "prompt": self.prompt}
        if not self.final:
            fields["barge_in"] = self.barge_in
        if self.outcome is not None:
            fields["outcome"] = self.outcome
        return fields

    # -- what the runtime asks ------------------------------------------------------------------

    def activity(self, host: ActivityHost) -> Activity:
        """The work that runs while the chart is in this state."""
        return StuckActivity(self, host)

    async def finish(self, host: ActivityHost) -> None:
        """A final state's work once the chart has ended (say goodbye, act); the runtime then hangs up."""


class PlainState:
    """How the rest of voicefsm sees a plain python-statemachine ``State`` (a decision or final state)."""

    kind = "state"
    waits_for: tuple[str, ...] = (DISCONNECTED,)
    default_exits: Mapping[str, str] = {}
    quiet_events: frozenset[str] = frozenset()
    aborting_events: frozenset[str] = frozenset()
    fault_attacks: tuple[str, ...] = ALL_FAULTS
    graph_shape = ""
    eventless = True
    needs_raw_audio = False
    prompt: str | None = None
    barge_in = False
    outcome: str | None = None

    def __init__(self, state: State) -> None:
        self.state = state
        self.id = state.id
        self.final = state.final
        if state.final:
            self.kind = "final"

    def events_received(self) -> tuple[str, ...]:
        return () if self.final else (*self.waits_for, *ALWAYS_RECEIVED)

    def templates(self) -> dict[str, str]:
        return {}

    def argument_problems(self) -> list[tuple[str, str]]:
        return []

    def flow_problems(self, flow: Any) -> list[tuple[str, str]]:
        return []

    def resolve(self, flow: Any) -> list[str]:
        return []

    def spec_fields(self) -> dict[str, Any]:
        return {}

    def activity(self, host: ActivityHost) -> Activity:
        return StuckActivity(self.state, host)

    async def finish(self, host: ActivityHost) -> None:
        return None


Kind = StateKind | PlainState


def kind_for(state: State) -> Kind:
    """The kind behaviour of any state: the state itself for a :class:`StateKind`, else a plain one."""
    return state if isinstance(state, StateKind) else PlainState(state)


def kind_of(state: State) -> str:
    """The voice kind of any state: ``say``, ``ask``, ``hangup``..., ``state`` or ``final``."""
    return kind_for(state).kind


def events_received(state: State) -> tuple[str, ...]:
    """Every event the runtime can send while in ``state``."""
    return kind_for(state).events_received()


def outcome_of(state: State) -> str:
    """What the call record says about a call that ended in the final ``state``."""
    return kind_for(state).outcome or "completed"


def is_ending(state: State) -> bool:
    """True for a final state of a kind that ends the call itself (says goodbye, acts, hangs up)."""
    return bool(state.final) and kind_for(state).outcome is not None


def ladder(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """One template or several (an escalating ladder), as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


__all__ = [
    "ALL_FAULTS",
    "Activity",
    "ActivityHost",
    "CallerKey",
    "CallerSaid",
    "CallerSpeaking",
    "FlowStuckError",
    "PlainState",
    "PromptEnded",
    "StateKind",
    "SttFailed",
    "TimerFired",
    "cancel_and_wait",
    "events_received",
    "is_ending",
    "kind_for",
    "kind_of",
    "outcome_of",
]
