"""``Do``: a backend step. Run a flow method with a deadline and move on by its outcome.

::

    class Booking(VoiceFlow):
        check = Do("check_time", results=["available", "taken"], filler="One moment.")
        available = check.to(confirm)
        taken = check.to(offer_other)
        # failure and timed_out go to `failed` (an apology) unless the flow says otherwise

        async def check_time(self) -> str:
            free = await self.resources.calendar.is_free(self.slots.day, self.slots.time)
            return "available" if free else "taken"

The method is a flow method without arguments: ``async def`` runs on the event loop, a plain
``def`` on voicefsm's bounded step pool (so it never blocks other calls). It returns

- ``None``: the event ``done`` (or the only result, when ``results`` names one);
- a name from ``results``: that event;
- ``Result(name, **slots)``: that event, after storing the slot values (validated like answers);
- any other value with ``slot=``: stored in that slot, then ``done``.

An exception sends ``failure`` (payload ``error``: its text, also ``{error}`` in the next
prompts); running longer than ``timeout_s`` (on the runtime's clock) sends ``timed_out`` (the
code is abandoned: a timeout does not undo what it did). While the step runs the caller's
speech and keys are ignored and no no-input timer runs. The filler follows VoiceXML's fetch
audio: it is spoken only if the step is still running after ``filler_after_s``, and once it
has started the outcome waits until it has played and ``filler_min_s`` has passed, so it is
never clipped. A hang-up cancels the step; with ``on_hangup="finish"`` it may finish within
``finish_s`` (its slots are stored, nothing is spoken), e.g. for a write that must not be half done.
"""

from __future__ import annotations

import asyncio
import inspect
import keyword
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from voicefsm.flow.errors import SlotRejected, TemplateError
from voicefsm.flow.kinds.base import (
    DISCONNECTED,
    DONE,
    FAILED,
    FAILURE,
    HOLD_REAL_S,
    LIMIT_REACHED,
    RUNTIME_EVENTS,
    TIMED_OUT,
    Activity,
    ActivityHost,
    Message,
    PromptEnded,
    StateKind,
    TimerFired,
)
from voicefsm.flow.slots import assign_slot, slot_names, slots_model_problem

OnHangup = Literal["cancel", "finish"]
#: The faults the fault runs inject into a step (besides a hang-up while it runs).
STEP_FAULTS: tuple[str, ...] = ("disconnected", "step_fails", "step_times_out")


class Result:
    """What a step's method may return: the outcome event ``name`` and slot values to store first."""

    __slots__ = ("name", "slots")

    def __init__(self, name: str, /, **slots: object) -> None:
        self.name = name
        self.slots = slots

    def __repr__(self) -> str:
        values = "".join(f", {key}={value!r}" for key, value in self.slots.items())
        return f"Result({self.name!r}{values})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and (self.name, self.slots) == (other.name, other.slots)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class StepStub:
    """A test's replacement for a step's method (``FlowLine(flow, stubs={"check": StepStub(...)})``).

    After ``delay_s`` on the runtime's clock it returns ``result`` (as the method would: None, a
    result name, a :class:`Result` or a slot value) or, with ``error``, fails with that text;
    ``hang=True`` never returns (the step times out).
    """

    result: object = None
    error: str | None = None
    delay_s: float = 0.0
    hang: bool = False


#: Step replacements by state id or method name; a value that is not a StepStub is the result.
StepStubs = Mapping[str, object]


class StepFailedError(Exception):
    """A stubbed step failure, or a step whose method returned something its state cannot use."""


#: The longest ``finish_s``: the driver gives a call's flow 10 s to wind down after a hang-up.
MAX_FINISH_S = 8.0


@dataclass(frozen=True, slots=True)
class StepFinished:
    """The step's task ended: with ``value`` returned, or ``error`` raised."""

    token: int
    value: object = None
    error: BaseException | None = None


class Do(StateKind):
    """Run the flow method ``method`` as a backend step; move on by its outcome event.

    The outcome is ``done`` (or a result), ``failure`` or ``timed_out``.

    ``results`` names the outcome events the method may return (default: just ``done``);
    ``slot`` stores a plain return value. See the module documentation for the rules.
    ``idempotent=True`` says running the step twice does no harm: a call resumed after its stream
    was lost while the step ran runs it again (otherwise the step ends with ``failure``).
    """

    kind = "do"
    default_exits: ClassVar[dict[str, str]] = {FAILURE: FAILED, TIMED_OUT: FAILED}
    quiet_events = frozenset({FAILURE, TIMED_OUT})
    fault_attacks = STEP_FAULTS
    graph_shape = "shape=hexagon"

    def __init__(
        self,
        method: str,
        *,
        results: Sequence[str] = (),
        slot: str | None = None,
        timeout_s: float = 10.0,
        filler: str | None = None,
        filler_after_s: float = 1.0,
        filler_min_s: float = 2.0,
        on_hangup: OnHangup = "cancel",
        finish_s: float = 5.0,
        idempotent: bool = False,
        name: str = "",
        initial: bool = False,
        enter: Any = None,
        exit: Any = None,
    ) -> None:
        super().__init__(None, name=name, initial=initial, barge_in=False, enter=enter, exit=exit)
        self.method = method
        self.idempotent = idempotent
        self.results: tuple[str, ...] = (results,) if isinstance(results, str) else tuple(results)
        self.slot = slot
        self.timeout_s = timeout_s
        self.filler = filler
        self.filler_after_s = filler_after_s
        self.filler_min_s = filler_min_s
        self.on_hangup = on_hangup
        self.finish_s = finish_s
        self.waits_for = (*self.outcomes, FAILURE, TIMED_OUT, DISCONNECTED)

    @property
    def outcomes(self) -> tuple[str, ...]:
        """The success events: the named results, or ``done``."""
        return self.results or (DONE,)

    # -- validate ------------------------------------------------------------------------------

    def templates(self) -> dict[str, str]:
        return {"filler": self.filler} if self.filler else {}

    def argument_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not isinstance(self.method, str) or not self.method.isidentifier():
            problems.append(
                (f"has method={self.method!r}", 'name a method of the flow, e.g. Do("check_time")')
            )
        reserved = set(RUNTIME_EVENTS) - {DONE}
        for result in self.results:
            if not result.isidentifier() or keyword.iskeyword(result):
                problems.append(
                    (f"has a result named {result!r}", "name results like events: taken, not_found")
                )
            elif result in reserved:
                problems.append(
                    (
                        f"has a result named {result!r}, which is an event voicefsm sends",
                        f"rename it, e.g. {result}_result",
                    )
                )
        doubles = sorted({r for r in self.results if self.results.count(r) > 1})
        if doubles:
            problems.append((f"names the result {doubles[0]!r} twice", "list each result once"))
        if isinstance(self.finish_s, int | float) and self.finish_s > MAX_FINISH_S:
            problems.append(
                (
                    f"has finish_s={self.finish_s!r}, but a call winds down within 10 s of the hang-up",
                    f"use at most {MAX_FINISH_S:g} s, or make the write idempotent and queue it elsewhere",
                )
            )
        for label, value, low in (
            ("timeout_s", self.timeout_s, "a positive number of seconds, e.g. 10"),
            ("finish_s", self.finish_s, "a positive number of seconds, e.g. 5"),
        ):
            if not (isinstance(value, int | float) and value > 0):
                problems.append((f"has {label}={value!r}", f"use {low}"))
        for label, value in (("filler_after_s", self.filler_after_s), ("filler_min_s", self.filler_min_s)):
            if not (isinstance(value, int | float) and value >= 0):
                problems.append((f"has {label}={value!r}", "use 0 or more seconds"))
        if self.on_hangup not in ("cancel", "finish"):
            problems.append((f"has on_hangup={self.on_hangup!r}", 'use "cancel" or "finish"'))
        return problems

    def flow_problems(self, flow: Any) -> list[tuple[str, str]]:
        from voicefsm.flow.checks import did_you_mean, listing

        problems: list[tuple[str, str]] = []
        if isinstance(self.method, str) and self.method.isidentifier():
            function = getattr(flow, self.method, None)
            if function is None or not callable(function):
                methods = [n for n in dir(flow) if not n.startswith("_") and callable(getattr(flow, n, None))]
                what = "does not define it" if function is None else f"has a {type(function).__name__} there"
                problems.append(
                    (
                        f"runs {self.method!r}, but the flow {what}",
                        did_you_mean(self.method, methods)
                        or f"define `async def {self.method}(self): ...` on the flow",
                    )
                )
            elif _needs_arguments(function):
                problems.append(
                    (
                        f"runs {self.method!r}, which needs arguments",
                        f"a step's method takes only self: read what {self.method} needs from self.slots",
                    )
                )
        model = flow.slots_model
        if self.slot is not None and slots_model_problem(model) is None:
            names = slot_names(model)
            if self.slot not in names:
                problems.append(
                    (
                        f"stores its result in slot {self.slot!r}, which {model.__name__} does not have "
                        f"({listing(names) or 'it has no fields'})",
                        did_you_mean(self.slot, names) or f"add a `{self.slot}` field to {model.__name__}",
                    )
                )
        return problems

    def spec_fields(self) -> dict[str, Any]:
        return {
            **super().spec_fields(),
            "method": self.method,
            "results": list(self.outcomes),
            "result_slot": self.slot,
            "timeout_s": self.timeout_s,
            "filler": self.filler,
            "filler_after_s": self.filler_after_s,
            "filler_min_s": self.filler_min_s,
            "on_hangup": self.on_hangup,
            "finish_s": self.finish_s,
        }

    # -- run -----------------------------------------------------------------------------------

    def activity(self, host: ActivityHost) -> Activity:
        return DoActivity(self, host)

    def stub(self, stubs: Mapping[str, object]) -> tuple[bool, object]:
        """(True, stub) when the test kit replaces this step (by state id, then method name)."""
        for key in (self.id, self.method):
            if key in stubs:
                return True, stubs[key]
        return False, None


def _needs_arguments(function: Any) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]  # looked up on the class
    return any(
        p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in parameters
    )


class DoActivity(Activity):
    """Run the step, speak the filler by VoiceXML's rule, deliver exactly one outcome."""

    state: Do

    def __init__(self, state: Do, host: ActivityHost) -> None:
        super().__init__(state, host)
        self.outcome: tuple[str, dict[str, Any]] | None = None
        self.filler_playing = False
        self.filler_started: float | None = None
        self.filler_min_passed = False
        self.delivered = False
        self.last_finished: StepFinished | None = None
        self.on_clock = asyncio.Event()  # set while a stub waits on the clock

    async def enter(self) -> None:
        self.host.set_builtin("error", "")
        self.spawn("step", self._run_step)
        if self.host.time_is_simulated:
            self.spawn("hold", self._hold_time)
        self.arm(TIMED_OUT, self.state.timeout_s, slot="timeout")
        left = self.host.time_left()
        if left is not None and left < self.state.timeout_s:
            self.arm(LIMIT_REACHED, left, slot="call_limit")  # the call's max_duration_s comes first
        if self.state.filler:
            self.arm("filler", self.state.filler_after_s, slot="filler")

    async def _hold_time(self, token: int) -> None:
        """On a simulated clock, time stands still while the step works (on a thread, a socket, a
        database), as it does while code runs on the loop, for up to HOLD_REAL_S real seconds; it
        moves while a stub waits on it, and after that (code that waits on nothing then times out)."""
        until = time.monotonic() + HOLD_REAL_S
        while self.running("step") and time.monotonic() < until:
            if self.on_clock.is_set():
                await asyncio.sleep(0.001)  # let the clock move
            else:
                await asyncio.sleep(0)

    async def _run_step(self, token: int) -> None:
        try:
            value = await self._call()
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # flow code's sys.exit() fails its step, not the server
            self.last_finished = StepFinished(token, error=exc)
        else:
            self.last_finished = StepFinished(token, value=value)
        self.host.post(self.last_finished)

    async def _call(self) -> object:
        stubbed, stub = self.state.stub(self.host.stubs)
        if stubbed:
            return await self._play_stub(stub)
        function = getattr(self.host.flow, self.state.method)
        return await self.host.run_flow_code(function, label=self.state.method)

    async def _play_stub(self, stub: object) -> object:
        if isinstance(stub, BaseException):
            raise stub
        if not isinstance(stub, StepStub):
            return stub
        self.on_clock.set()
        try:
            if stub.delay_s > 0:
                await self.host.clock.sleep(stub.delay_s)
            if stub.hang:
                await asyncio.Event().wait()  # never set: only the timeout (or a hang-up) ends it
        finally:
            self.on_clock.clear()
        if stub.error is not None:
            raise StepFailedError(stub.error)
        return stub.result

    # -- messages ------------------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        if isinstance(message, StepFinished):
            if self.claim(message, "step"):
                self._finished(message)
                await self._maybe_deliver()
        elif isinstance(message, TimerFired):
            if self.claim(message, "timeout"):
                await self.cancel("step")
                self._set_outcome(TIMED_OUT, {}, f"it took longer than {self.state.timeout_s:g} seconds")
                await self._maybe_deliver()
            elif self.claim(message, "filler"):
                self._start_filler()
            elif self.claim(message, "filler_min"):
                self.filler_min_passed = True
                await self._maybe_deliver()
            elif self.claim(message, "call_limit"):
                await self.host.check_limits(due=True)
        elif isinstance(message, PromptEnded) and self.claim(message, "prompt"):
            self.filler_playing = False
            if message.error is not None:
                self.host.fail("tts", f"could not speak the filler of {self.state.id}: {message.error}")
            await self._maybe_deliver()
        # The caller's speech and keys are ignored while a step runs (no barge-in, no no-input).

    def _start_filler(self) -> None:
        if self.outcome is not None or not self.state.filler:
            return
        try:
            text = self.host.render(self.state.filler)
        except TemplateError:
            return  # reported; the step goes on without a filler
        self.filler_playing = True
        self.filler_started = self.host.clock.now()
        self.spawn("prompt", lambda token: self.host.speak(token, text, self.state.id))
        self.arm("filler_min", self.state.filler_min_s, slot="filler_min")

    def _finished(self, message: StepFinished) -> None:
        self.disarm("timeout")
        if message.error is not None:
            error = message.error
            text = str(error) or type(error).__name__
            if not isinstance(error, StepFailedError):
                flow = type(self.host.flow).__name__
                self.host.fail(
                    "step",
                    f"{flow}.{self.state.id}: {self.state.method} raised {type(error).__name__}: {text}",
                    error,
                )
            self._set_outcome(FAILURE, {"error": text}, text)
            return
        try:
            event, payload = self.outcome_of(message.value)
        except StepFailedError as exc:
            flow = type(self.host.flow).__name__
            self.host.fail("step", f"{flow}.{self.state.id}: {exc}", exc)
            self._set_outcome(FAILURE, {"error": str(exc)}, str(exc))
            return
        self._set_outcome(event, payload, "")

    def outcome_of(self, value: object) -> tuple[str, dict[str, Any]]:
        """The event (and payload) for what the method returned; stores slots. Raises StepFailedError."""
        state = self.state
        outcomes = state.outcomes
        sole = outcomes[0] if len(outcomes) == 1 else None
        if isinstance(value, Result):
            if value.name not in outcomes:
                raise StepFailedError(
                    f"{state.method} returned {value!r}, but the state's results are {', '.join(outcomes)}"
                )
            for name, slot_value in value.slots.items():
                self._store(name, slot_value)
            return value.name, {"value": value}
        if isinstance(value, str) and value in state.results:
            return value, {"value": value}
        if value is not None and state.slot is not None:
            self._store(state.slot, value)
        if sole is None:
            raise StepFailedError(
                f"{state.method} returned {value!r}; it must return one of {', '.join(outcomes)} "
                "(or Result(name, ...))"
            )
        return sole, {"value": value}

    def _store(self, name: str, value: object) -> None:
        flow = self.host.flow
        if name not in type(flow.slots).model_fields:
            raise StepFailedError(
                f"{self.state.method} set slot {name!r}, which the slots model does not have"
            )
        try:
            stored = assign_slot(flow.slots, name, value)
        except SlotRejected as exc:
            raise StepFailedError(
                f"{self.state.method} returned {value!r} for slot {name!r}: {exc.reason}"
            ) from exc
        self.host.notify("on_slot", name, stored)

    def _set_outcome(self, event: str, payload: dict[str, Any], error: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = (event, payload)
        self.disarm("filler")  # a filler not started yet never starts
        if error:
            self.host.set_builtin("error", error)
        self.host.notify("on_step", self.state.id, event, error)

    async def _maybe_deliver(self) -> None:
        if self.outcome is None or self.delivered or self.filler_playing:
            return
        if self.filler_started is not None and not self.filler_min_passed:
            return
        self.delivered = True
        event, payload = self.outcome
        await self.host.send(event, **payload)

    async def stop(self, *, hung_up: bool = False) -> None:
        try:
            if hung_up and self.outcome is None:
                if self.state.on_hangup == "finish":
                    await self._finish_after_hangup()
                elif self.running("step"):
                    self.host.notify("on_step", self.state.id, "cancelled", "the caller hung up")
        finally:  # also when the wait above is cancelled (server shutdown): no task outlives the call
            await super().stop(hung_up=hung_up)

    async def _finish_after_hangup(self) -> None:
        """Let the step finish within ``finish_s`` (nothing is spoken); store what it returns."""
        await self.cancel("prompt")
        entry = self._tasks.pop("step", None)
        if entry is None:
            return
        task = entry[1]
        limit = asyncio.create_task(self.host.clock.sleep(self.state.finish_s), name="flow-step-finish-limit")
        try:
            await asyncio.wait({task, limit}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            limit.cancel()
            await asyncio.wait({limit})
            if not task.done():
                self._tasks["step"] = entry  # cancelled (and awaited) by stop(), even if this wait was
        if not task.done():
            self.host.notify(
                "on_step",
                self.state.id,
                "cancelled",
                f"not finished {self.state.finish_s:g} s after the hang-up",
            )
            return
        if self.last_finished is not None:  # its message is in the mailbox too; the runtime drops it
            self._finished(self.last_finished)


__all__ = [
    "STEP_FAULTS",
    "Do",
    "DoActivity",
    "Result",
    "StepFailedError",
    "StepFinished",
    "StepStub",
    "StepStubs",
]
