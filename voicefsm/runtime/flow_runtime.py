"""Run a :class:`~voicefsm.flow.chart.VoiceFlow` on a :class:`~voicefsm.runtime.call.Call`.

One :class:`FlowRuntime` per call. Its :meth:`~FlowRuntime.run` coroutine is the call's
mailbox: call events (speech, keys, errors, hang-up) and the results of the state's own
tasks arrive there, and it is the only code that sends events to the chart. Whatever the
chart does, it does between two messages, so a hang-up never waits behind a prompt.

What a state does is its kind's :class:`~voicefsm.flow.kinds.base.Activity` (Say speaks, Ask
listens, Do runs a step...): started when the chart enters the state, handed every message
for it, cancelled and awaited when the chart leaves it. The runtime is the activity's
:class:`~voicefsm.flow.kinds.base.ActivityHost`: it sends events to the chart, speaks, renders
templates, keeps the clock and the line; it never asks which kind a state is. Once the chart
is final, the final state's kind finishes the call (goodbye, transfer, text, echo) and the
runtime hangs up.

The caller's words become :class:`~voicefsm.flow.kinds.base.CallerSaid` (the turn recorded
first), interim transcripts :class:`~voicefsm.flow.kinds.base.CallerSpeaking` (barge-in), keys
:class:`~voicefsm.flow.kinds.base.CallerKey`. A speech-recognition failure reaches the activity
as :class:`~voicefsm.flow.kinds.base.SttFailed`, and is held for the next state that listens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from statemachine import State

from voicefsm.core.actions import TelephonyActions
from voicefsm.core.events import (
    CallEvent,
    Committed,
    Disconnected,
    KeyPressed,
    MachineDetected,
    Recognizing,
    SttError,
)
from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.errors import FlowError, TemplateError
from voicefsm.flow.expect_base import Expectation
from voicefsm.flow.kinds import (
    DISCONNECTED,
    ERROR_EXECUTION,
    LIMIT_REACHED,
    MACHINE_ANSWERED,
    Activity,
    CallerKey,
    CallerSaid,
    CallerSpeaking,
    FlowStuckError,
    PromptEnded,
    SttFailed,
    is_ending,
    kind_for,
    outcome_of,
)
from voicefsm.flow.resources import Resources
from voicefsm.flow.slots import render_template, template_values
from voicefsm.providers.base import TextToSpeech, hints_from_phrases
from voicefsm.runtime.call import Call, SpeakResult
from voicefsm.runtime.clock import Clock, LoopClock, VirtualClock
from voicefsm.runtime.flow_endings import cancel_and_wait, echo_caller, wait_for_hangup
from voicefsm.runtime.flow_listener import FlowListener, FlowResult, Turn
from voicefsm.runtime.step_pool import run_sync
from voicefsm.runtime.watchdog import running_callback

__all__ = [
    "CallHandler",
    "FlowListener",
    "FlowResult",
    "FlowRuntime",
    "RuntimeLimits",
    "Turn",
]

log = logging.getLogger(__name__)


class FlowCodeError(FlowError):
    """Flow code that broke a rule of the runtime (it blocked the call, or used asyncio from sync code)."""


@dataclass(frozen=True, slots=True)
class RuntimeLimits:
    """Timing rules of the runtime, in seconds."""

    #: Pause after a key that ends keypad entry.
    inter_digit_s: float = 3.0
    #: A prompt's mark may come back this late after its audio is queued, plus ``mark_s_per_char``
    #: per character (a phone voice says about 15 characters a second).
    mark_slack_s: float = 10.0
    mark_s_per_char: float = 0.1
    #: How long to wait for the line to close after asking for the hang-up.
    hangup_wait_s: float = 5.0
    #: Deadline of one telephony action (transfer, SMS).
    action_timeout_s: float = 15.0
    #: A user-written sync callback (guard, action, hook) running longer than this (real seconds) is
    #: reported naming it; on the test kit's virtual clock the call then fails at once.
    callback_budget_s: float = 0.05


CallHandler = Callable[[Call], Awaitable[None]]


_CALLER_EVENTS = (Committed, Recognizing, KeyPressed, SttError, Disconnected, MachineDetected)


@dataclass(frozen=True, slots=True)
class _DurationUp:
    """The call has lasted ``max_duration_s``."""

    seconds: float


class FlowRuntime:
    """Drives one flow instance on one call. Create it on the call's loop; :meth:`run` it once.

    ``resources`` are handed to a flow built here (``self.resources.<name>`` in flow code);
    ``stubs`` (the test kit's) replace step bodies by state id or method name.
    """

    def __init__(
        self,
        flow: type[VoiceFlow] | VoiceFlow,
        call: Call,
        tts: TextToSpeech,
        *,
        actions: TelephonyActions | None = None,
        clock: Clock | None = None,
        listeners: Sequence[FlowListener] = (),
        today: Callable[[], dt.date] = dt.date.today,
        limits: RuntimeLimits | None = None,
        resources: Mapping[str, object] | None = None,
        stubs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(flow, VoiceFlow):
            if resources is not None and not len(flow.resources):
                flow.resources = Resources.for_flow(type(flow), resources)
            self.flow = flow
        else:
            self.flow = flow(caller=call.caller, parameters=call.parameters, resources=resources)
        self.call = call
        self.tts = tts
        self.actions = actions
        self.clock: Clock = clock or LoopClock()
        self.listeners = tuple(listeners)
        self._today = today
        self.limits = limits or RuntimeLimits()
        self._stubs: Mapping[str, Any] = dict(stubs or {}) if not isinstance(stubs, Mapping) else stubs
        self._mailbox: asyncio.Queue[Any] = asyncio.Queue()
        self._tokens = itertools.count(1)
        self._activity: Activity | None = None
        self._steps_seen = 0
        self._builtins: dict[str, str] = {"reason": "", "error": ""}
        self._stt_failed: str | None = None
        self._disconnected: str | None = None
        self._aborted = False
        self._ran = False
        self._t0 = 0.0
        self._caller_started: float | None = None
        self._last_caller_end: float | None = None
        self._callback_lock = asyncio.Lock()
        self.flow._callback_runner = self._run_callback
        self._entries = 0
        self._same = 0
        self._last_entered: str | None = None
        self._limited = False

    @property
    def name(self) -> str:
        """The flow's class name."""
        return type(self.flow).__name__

    def _elapsed(self) -> float:
        """Seconds since :meth:`run` started: the time scale of every :class:`Turn`."""
        return self.clock.now() - self._t0

    # -- the mailbox --------------------------------------------------------------------------

    async def run(self) -> FlowResult:
        """Run the flow until the chart is final and the call has ended; leaves no task behind."""
        if self._ran:
            raise RuntimeError("a FlowRuntime runs once; make a new one (and a new flow) per call")
        self._ran = True
        self._t0 = self.clock.now()
        unsubscribe = self.call.subscribe(self._post)
        limit = getattr(self.flow, "max_duration_s", None)
        guard = None
        if limit and isinstance(self.clock, LoopClock):
            guard = asyncio.create_task(self._duration_guard(limit), name="flow-limit-duration")
        try:
            await self._activate()
            while not self.flow.is_terminated and not self._aborted:
                await self._handle(await self._mailbox.get())
            await self._stop_activity()
            await cancel_and_wait(guard)
            await self._finish()
        finally:
            unsubscribe()
            await cancel_and_wait(guard)
            await self._stop_activity()
        return self._result()

    async def _duration_guard(self, seconds: float) -> None:
        """Real time: post the end of ``max_duration_s`` to the mailbox, whatever the call is doing.

        A simulated clock (tests, chat) moves only to wake something that is due, which then posts
        to the mailbox; there the duration is checked on every message instead (a sleeper far in the
        future would let simulated time run to it whenever the call waits on real time).
        """
        await self.clock.sleep(seconds)
        self._mailbox.put_nowait(_DurationUp(seconds))

    def _post(self, event: CallEvent) -> None:
        if isinstance(event, _CALLER_EVENTS):
            self._mailbox.put_nowait(event)

    async def _activate(self) -> None:
        try:
            result = self.flow.activate_initial_state()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._fail("flow", f"{self.name} could not start: {exc}", exc)
            self._aborted = True
            return
        self._notify("on_transition", "", "start", self.flow.current.id)
        self._count_entry(self.flow.current.id)
        self._report_steps()
        if self.call.is_disconnected:
            await self._on_disconnected(self.call.disconnect_reason or "hangup")
            return
        await self._enter(self.flow.current)

    async def _handle(self, message: Any) -> None:
        if isinstance(message, Disconnected):
            await self._on_disconnected(message.reason)
            return
        if isinstance(message, MachineDetected):
            await self._on_machine(message)
            return
        left = self.time_left()
        if isinstance(message, _DurationUp) or (left == 0.0 and not self._limited):
            await self.check_limits(due=isinstance(message, _DurationUp))
            return
        if isinstance(message, SttError):
            self._fail("stt", f"speech recognition failed: {message.reason}")
            self._stt_failed = message.reason
        activity = self._activity
        if activity is None:
            return
        if isinstance(message, SttError):
            message = SttFailed(message.reason)
        elif isinstance(message, Recognizing):
            self._caller_started = self._caller_started or self._elapsed()
            message = CallerSpeaking()
        elif isinstance(message, Committed):
            now = self._elapsed()
            start, self._caller_started = self._caller_started or now, None
            if message.text.strip():
                self._last_caller_end = now
                turn = Turn("caller", message.text, start, now, message.via, False, activity.state.id)
                self._notify("on_turn", turn)
            message = CallerSaid(message.text, message.via)
        elif isinstance(message, KeyPressed):
            message = CallerKey(message.digit)
        await activity.handle(message)

    async def _on_disconnected(self, reason: str) -> None:
        self._disconnected = reason
        await self._stop_activity(hung_up=True)
        if not self.flow.is_terminated:
            await self._send(DISCONNECTED, reason=reason)
        if not self.flow.is_terminated:
            self.call.log.warning(
                "%s did not reach a final state on disconnected (in %s)", self.name, self.flow.current.id
            )
            self._aborted = True

    async def _on_machine(self, verdict: MachineDetected) -> None:
        """Answering-machine detection answered: noted on the call's record (an ``amd`` row); a machine
        whose greeting has ended becomes ``machine_answered`` for a flow with a transition on it.

        A flow without one, a verdict that is not a machine, or a state with no transition on it (the
        flow already ended, or chose not to leave it) changes nothing: the call goes on.
        """
        note = f"answering-machine detection: answered by {verdict.answered_by}"
        self.call.log.info("%s", note)
        self._notify("on_error", "amd", note, None)
        if not verdict.machine or self.flow.is_terminated or self._disconnected is not None:
            return
        if MACHINE_ANSWERED not in self.flow._event_ids:
            return
        await self._send(MACHINE_ANSWERED, answered_by=verdict.answered_by)

    # -- talking to the chart -----------------------------------------------------------------

    async def _send(self, event: str, **payload: Any) -> bool:
        """Send ``event``; on a transition, stop the old state's work and start the new one's."""
        try:
            result = self.flow.send(event, **payload)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._fail("flow", f"{self.name} raised on {event} in {self.flow.current.id}: {exc}", exc)
            self._report_steps()
            if event != ERROR_EXECUTION and not self.flow.is_terminated:
                return await self._send(ERROR_EXECUTION, error=exc)
            self._aborted = not self.flow.is_terminated
            return False
        if not self._report_steps():
            return False
        await self._stop_activity()
        crossed = self._limit_crossed()
        if crossed is not None and not self.flow.is_terminated:
            return await self._limit_reached(*crossed)
        await self._enter(self.flow.current)
        return True

    async def _send_waited(self, event: str, **payload: Any) -> None:
        """Send an event the state waits for; a flow that ignores it is failed, not left hanging."""
        state = self.flow.current
        if await self._send(event, **payload) or self.flow.is_terminated or self._aborted:
            return
        stuck = FlowStuckError(self.name, state.id, event)
        self._fail("flow", str(stuck), stuck)
        if event == ERROR_EXECUTION or not await self._send(ERROR_EXECUTION, error=stuck):
            self._aborted = not self.flow.is_terminated

    def _report_steps(self) -> bool:
        steps = self.flow.steps[self._steps_seen :]
        self._steps_seen = len(self.flow.steps)
        for step in steps:
            self._count_entry(step.target)
            self._notify("on_transition", step.source, step.event, step.target)
        return bool(steps)

    # -- call limits --------------------------------------------------------------------------

    def _count_entry(self, state: str) -> None:
        self._entries += 1
        self._same = self._same + 1 if state == self._last_entered else 1
        self._last_entered = state

    def _limit_crossed(self) -> tuple[str, str] | None:
        """Which limit (and why) the entries so far cross, or None."""
        if self._limited:
            return None
        most = getattr(self.flow, "max_state_entries", None)
        if most and self._entries > most:
            return (
                "max_state_entries",
                f"the call entered {self._entries} states (max_state_entries = {most})",
            )
        same = getattr(self.flow, "max_same_state", None)
        if same and self._same > same:
            return (
                "max_same_state",
                f"the call entered {self._last_entered} {self._same} times in a row "
                f"(max_same_state = {same})",
            )
        return None

    async def _limit_reached(self, limit: str, reason: str) -> bool:
        """Send ``limit_reached``: by default the call says a polite goodbye in ``limit`` and ends."""
        self._limited = True
        self._fail("limit", f"limit reached: {reason}")
        self._notify("on_limit", limit, reason)
        await self._stop_activity()
        sent = await self._send(LIMIT_REACHED, reason=reason)
        if not sent and not self.flow.is_terminated:
            self._aborted = True
        return sent

    # -- entering a state ---------------------------------------------------------------------

    async def _enter(self, state: State) -> None:
        activity = self._activity = kind_for(state).activity(self)
        if state.final or self._disconnected is not None:
            return
        await activity.enter()

    async def _stop_activity(self, *, hung_up: bool = False) -> None:
        activity, self._activity = self._activity, None
        if activity is not None:
            await activity.stop(hung_up=hung_up)

    # -- the ActivityHost the state's activity works with ---------------------------------------

    @property
    def time_is_simulated(self) -> bool:
        """True unless the clock is the loop's real one."""
        return not isinstance(self.clock, LoopClock)

    @property
    def stubs(self) -> Mapping[str, Any]:
        """Test-kit replacements of step bodies (empty in production)."""
        return self._stubs

    @property
    def stt_failed(self) -> str | None:
        """Why speech recognition failed earlier in the call, or None."""
        return self._stt_failed

    def next_token(self) -> int:
        """A fresh token for an activity's task."""
        return next(self._tokens)

    def time_left(self) -> float | None:
        """Seconds until the call's max_duration_s, or None."""
        longest = getattr(self.flow, "max_duration_s", None)
        return max(0.0, longest - self._elapsed()) if longest else None

    async def check_limits(self, *, due: bool = False) -> None:
        """Send limit_reached if the call has lasted max_duration_s (``due``: its timer says so)."""
        longest = getattr(self.flow, "max_duration_s", None)
        over = due or (longest is not None and self._elapsed() >= longest - 1e-6)
        if longest and over and not self._limited and not self.flow.is_terminated:
            await self._limit_reached(
                "max_duration_s", f"the call lasted {longest:g} seconds (max_duration_s)"
            )

    def post(self, message: Any) -> None:
        """Put an activity's message in the mailbox."""
        self._mailbox.put_nowait(message)

    async def send(self, event: str, **payload: Any) -> None:
        """Send an event the state waits for; a flow that ignores it is failed, not left hanging."""
        await self._send_waited(event, **payload)

    def today(self) -> dt.date:
        """What "today" is for parsing dates."""
        return self._today()

    def elapsed(self) -> float:
        """Seconds since the flow started."""
        return self._elapsed()

    def notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every listener."""
        self._notify(hook, *args)

    def fail(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Log and report a failure."""
        self._fail(kind, message, error)

    def set_builtin(self, name: str, value: str) -> None:
        """Set a built-in template value (``reason``, ``error``)."""
        self._builtins[name] = value

    def caller_turn(self, text: str, start: float, via: str, state: str) -> None:
        """Record a caller turn an activity collected (keys)."""
        now = self._elapsed()
        self._last_caller_end = now
        self._notify("on_turn", Turn("caller", text, start, now, via, False, state))  # type: ignore[arg-type]

    def caller_quiet(self) -> None:
        """The caller was silent: forget when they started speaking."""
        self._caller_started = None

    def set_hints(self, expectation: Expectation) -> None:
        """Give the recognizer the phrases ``expectation`` accepts."""
        stt = self.call.stt
        if stt is None:
            return
        try:
            stt.set_hints(
                hints_from_phrases(
                    expectation.grammar_phrases(),
                    open_vocabulary=expectation.open_vocabulary(),
                    repeatable=expectation.repeatable(),
                    keyterms=expectation.hints(),
                )
            )
        except Exception:
            state = self._activity.state.id if self._activity is not None else "?"
            self.call.log.exception("the recognizer refused hints for %s", state)

    def render(self, template: str) -> str:
        """Fill a template from the slots, built-ins and computed values; raises TemplateError (reported)."""
        state = self._activity.state if self._activity is not None else self.flow.current
        values = template_values(self.flow, caller=self.flow.caller or "", **self._builtins)
        try:
            return render_template(template, values)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            error = TemplateError(self.name, state.id, template, f"{type(exc).__name__}: {exc}")
            self._fail("flow", str(error), error)
            raise error from exc

    async def run_flow_code(self, function: Callable[..., Any], *args: Any, label: str = "") -> Any:
        """Call flow code: awaited on the loop when async, on the bounded step pool when sync.

        The watchdog's ``current_callback`` names the flow, state and ``label`` meanwhile.
        """
        state = self._activity.state.id if self._activity is not None else None
        with running_callback(
            self.name, state, label or getattr(function, "__name__", "?"), _where(function)
        ):
            if inspect.iscoroutinefunction(function):
                return await function(*args)
            result = await run_sync(function, *args)
            if inspect.isawaitable(result):
                return await result
            return result

    async def _run_callback(
        self,
        label: str,
        where: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a user-written sync guard, action or hook on the step pool, so a slow one delays only
        this call. One at a time, in order; named for the watchdog; timed against the budget.

        A thread hop costs ~60-130 µs (measured), which is small beside a transition (~0.3 ms); voicefsm's
        own guards (``yes``, ``no``) stay on the loop. On a simulated clock time stands still meanwhile;
        on the test kit's virtual clock a callback over budget fails the call at once (its thread is
        abandoned), so a test or fault run names it without waiting for it.
        """
        state = self._current_id()
        budget = self.limits.callback_budget_s
        if inspect.iscoroutinefunction(function):  # async flow code runs on the loop, named for the watchdog
            async with self._callback_lock:
                with running_callback(self.name, state, label, where):
                    return await function(*args, **kwargs)
        async with self._callback_lock:
            with running_callback(self.name, state, label, where) as named:
                begun: list[float] = []  # when the pool thread started it: queueing is not the callback's

                def timed() -> Any:
                    begun.append(time.perf_counter())
                    return function(*args, **kwargs)

                job = asyncio.ensure_future(run_sync(timed))
                try:
                    if self.time_is_simulated:
                        while not job.done():
                            if (
                                begun
                                and time.perf_counter() - begun[0] > budget
                                and isinstance(self.clock, VirtualClock)
                            ):
                                raise self._blocking(named, budget, abort=True)
                            await asyncio.sleep(0)
                    else:
                        done, _ = await asyncio.wait({job}, timeout=budget)
                        while not done and not begun:  # still queued for a thread: not its fault
                            done, _ = await asyncio.wait({job}, timeout=budget)
                        if not done:
                            done, _ = await asyncio.wait(
                                {job}, timeout=max(0.0, begun[0] + budget - time.perf_counter())
                            )
                        if not done:
                            self._blocking(named, budget, abort=False)
                    value = await job
                except RuntimeError as exc:
                    if "no running event loop" in str(exc) or "no current event loop" in str(exc):
                        raise FlowCodeError(
                            f"{named} uses asyncio, but sync flow code runs on the step pool, off the event "
                            "loop; make it `async def`"
                        ) from exc
                    raise
                finally:
                    await cancel_and_wait(job)
        return value

    def _blocking(self, named: str, budget: float, *, abort: bool) -> FlowCodeError:
        message = (
            f"{named} blocked for more than {budget * 1000:.0f} ms: slow work (a request, a query, "
            "a sleep) belongs in a Do step, or make the callback `async def`"
        )
        self._fail("blocking", message + (" (the test kit fails the call)" if abort else ""))
        return FlowCodeError(message)

    def _current_id(self) -> str | None:
        try:
            return str(self.flow.current.id)
        except Exception:
            return None

    # -- prompts ------------------------------------------------------------------------------

    async def speak(self, token: int, text: str, label: str) -> None:
        """Speak ``text`` for state ``label``; posts PromptEnded(token) when it has ended."""
        start = self._elapsed()
        latency = self._latency(start)
        deadline_s = self.limits.mark_slack_s + self.limits.mark_s_per_char * len(text)
        try:
            result = await self.call.speak(self.tts, text, label=label, mark_timeout_s=deadline_s)
        except asyncio.CancelledError:
            self._notify(
                "on_turn", Turn("agent", text, start, self._elapsed(), "speech", True, label, latency)
            )
            raise
        except Exception as exc:  # a bug below us must still end the prompt with tts_error
            self.call.log.exception("speaking %r failed", text[:40])
            result = SpeakResult(text, "", error=f"{type(exc).__name__}: {exc}")
        if not (result.call_disconnected or result.error):  # a failed prompt is an error, not a turn
            turn = Turn("agent", text, start, self._elapsed(), "speech", result.interrupted, label, latency)
            self._notify("on_turn", turn)
        self._mailbox.put_nowait(
            PromptEnded(
                token,
                interrupted=result.interrupted,
                error=result.error,
                disconnected=result.call_disconnected,
            )
        )

    def _latency(self, start: float) -> float | None:
        if self._last_caller_end is None:
            return None
        latency, self._last_caller_end = max(0.0, start - self._last_caller_end), None
        return latency

    # -- the end ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        if self._disconnected is None and self.call.is_disconnected:  # its event is still in the mailbox
            self._disconnected = self.call.disconnect_reason or "hangup"
        state = self.flow.current if self.flow.is_terminated else None
        if state is not None and is_ending(state):
            await kind_for(state).finish(self)
            reason = outcome_of(state)
        else:
            if self._disconnected is None:
                await self.say_last(self.flow.apology, "failed")
            reason = "error"
        if self._disconnected is None:
            self.call.request_disconnect(reason)
            await wait_for_hangup(self.call, self.clock, self.limits.hangup_wait_s)

    def line_open(self) -> bool:
        """True while the caller is still on the line."""
        return self._disconnected is None and not self.call.is_disconnected

    async def say_last(self, text: str, label: str) -> None:
        """Speak without a mailbox to answer to: the chart is final, only the line is left."""
        await self.speak(next(self._tokens), text, label)

    async def transfer(self, number: str) -> None:
        """Transfer the call to ``number`` (unless the caller has gone)."""
        if not self.line_open():
            self.call.log.info("not transferring: the call has already ended")
            return
        await self._act("transfer", lambda actions: actions.transfer(self.call.call_sid or "", number))

    async def send_sms(self, to: str, body: str) -> None:
        """Text ``body`` to ``to``."""
        await self._act("send_sms", lambda actions: actions.send_sms(to, body))

    async def echo(self, max_s: float) -> None:
        """Send the caller's audio straight back until hang-up or ``max_s``."""
        await echo_caller(self.call, self.clock, max_s)

    async def _act(self, action: str, make: Callable[[TelephonyActions], Coroutine[Any, Any, Any]]) -> None:
        if self.actions is None:
            self._fail("action", f"cannot {action}: this runtime was given no TelephonyActions")
            return
        try:
            async with asyncio.timeout(self.limits.action_timeout_s):
                await make(self.actions)
        except Exception as exc:
            self._fail("action", f"{action} failed: {exc}", exc)

    def _result(self) -> FlowResult:
        ended_by = self.call.hangup_reason or self._disconnected
        return FlowResult.of(self.flow, aborted=self._aborted, ended_by=ended_by)

    # -- reporting ----------------------------------------------------------------------------

    def _fail(self, kind: str, message: str, error: BaseException | None = None) -> None:
        if kind == "flow" and error is not None and not isinstance(error, FlowError):
            self.call.log.error("%s", message, exc_info=error)
        else:
            self.call.log.warning("%s", message)
        self._notify("on_error", kind, message, error)

    def _notify(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            method = getattr(listener, hook, None)
            if method is None:
                continue  # a listener written before the hook existed
            try:
                method(*args)
            except Exception:
                self.call.log.exception("flow listener %r failed in %s", listener, hook)


def _where(function: Callable[..., Any]) -> str | None:
    """``file:line`` of a function's definition, for messages that name flow code."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None
