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
import contextlib
import datetime as dt
import inspect
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping, Sequence
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
    FAILURE,
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
from voicefsm.flow.kinds.do import StepFailedError
from voicefsm.flow.prompts import next_prompt
from voicefsm.flow.resources import Resources
from voicefsm.flow.slots import render_template, template_values
from voicefsm.observability.tracing import span
from voicefsm.providers.base import TextCallback, TextToSpeech, hints_from_phrases
from voicefsm.providers.prompt_cache import Prefetcher, source_of
from voicefsm.runtime.call import Call, SpeakResult
from voicefsm.runtime.clock import Clock, LoopClock, VirtualClock
from voicefsm.runtime.flow_endings import cancel_and_wait, echo_caller, wait_for_hangup
from voicefsm.runtime.flow_listener import FlowListener, FlowResult, Turn, TurnLatency, Via
from voicefsm.runtime.snapshot import (
    RESUME_APOLOGY,
    RESUMED,
    SETTLE_S,
    FlowSnapshot,
    SnapshotSink,
    flow_fingerprint,
    line_lost,
    restored_flow,
    slot_values,
)
from voicefsm.runtime.step_pool import run_sync
from voicefsm.runtime.watchdog import running_callback

__all__ = [
    "CallHandler",
    "FlowListener",
    "FlowResult",
    "FlowRuntime",
    "RuntimeLimits",
    "Turn",
    "TurnLatency",
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


@dataclass(slots=True)
class _Waiting:
    """A caller turn waiting for its answer: the times of :class:`TurnLatency` as they become known."""

    state: str | None
    via: Via
    speech_end_s: float
    committed_s: float
    parsed_s: float | None = None
    transitioned_s: float | None = None
    claimed: bool = False  # a prompt that may answer it is being synthesized

    def answered(
        self, first_audio_s: float | None, first_byte_s: float | None, source: str | None, prefetched: bool
    ) -> TurnLatency:
        return TurnLatency(
            self.state,
            self.via,
            self.speech_end_s,
            self.committed_s,
            self.parsed_s,
            self.transitioned_s,
            first_audio_s,
            first_byte_s,
            source,
            prefetched,
        )


class FlowRuntime:
    """Drives one flow instance on one call. Create it on the call's loop; :meth:`run` it once.

    ``resources`` are handed to a flow built here (``self.resources.<name>`` in flow code);
    ``stubs`` (the test kit's) replace step bodies by state id or method name. ``speak_ahead``
    speaks through a :class:`~voicefsm.providers.prompt_cache.Prefetcher`: a state's next prompt
    is synthesized as soon as its text is certain (see :meth:`speak_ahead`).
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
        speak_ahead: bool = False,
        restore: FlowSnapshot | None = None,
        snapshots: SnapshotSink | None = None,
    ) -> None:
        if restore is not None:  # resume (runtime/snapshot.py): in the saved state, no entry code run
            if isinstance(flow, VoiceFlow):
                raise TypeError("restore= needs the flow class, not an instance")
            flow = restored_flow(flow, restore, resources=resources)
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
        #: Synthesis ahead of need (None when off): every prompt is spoken through it.
        self.ahead: Prefetcher | None = Prefetcher(tts, now=self._elapsed) if speak_ahead else None
        self._waiting: _Waiting | None = None  # the caller's last turn, until its answer is heard
        self._speech_end: float | None = None  # the caller's last interim words
        self._last_key: float | None = None

        # Snapshots (runtime/snapshot.py): taken at every transition, handed to ``snapshots``.
        self._restore = restore
        self._snapshots = snapshots
        self._generation = restore.generation + 1 if restore is not None else 0
        self._snapshot_seq = 0
        self._before_s = 0.0  # seconds the call lasted before it was resumed
        self._snapshot_dropped = False
        if restore is not None:
            self._builtins.update(restore.builtins)
            self._stt_failed = restore.stt_failed
            self._entries, self._same = restore.entries, restore.same
            self._last_entered, self._limited = restore.last_entered, restore.limited
            self._before_s = restore.elapsed_s

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
            left = max(0.0, limit - self._before_s)
            guard = asyncio.create_task(self._duration_guard(left), name="flow-limit-duration")
        try:
            await self._activate()
            while not self.flow.is_terminated and not self._aborted:
                await self._handle(await self._mailbox.get())
            self._end_snapshots()
            await self._stop_activity()
            await cancel_and_wait(guard)
            await self._finish()
            await self._snapshot_deleted()
        finally:
            unsubscribe()
            await cancel_and_wait(guard)
            await self._stop_activity()
            if self.ahead is not None:
                await self.ahead.aclose()
            self._unanswered()
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
        if self._restore is not None:
            await self._resume(self._restore)
            return
        self._notify("on_transition", "", "start", self.flow.current.id)
        self._count_entry(self.flow.current.id)
        self._report_steps()
        if self.call.is_disconnected:
            await self._on_disconnected(self.call.disconnect_reason or "hangup")
            return
        await self._enter(self.flow.current)
        self._take_snapshot()

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
            self._speech_end = self._elapsed()
            self._caller_started = self._caller_started or self._speech_end
            message = CallerSpeaking()
        elif isinstance(message, Committed):
            now = self._elapsed()
            start, self._caller_started = self._caller_started or now, None
            if message.text.strip():
                self._last_caller_end = now
                turn = Turn("caller", message.text, start, now, message.via, False, activity.state.id)
                self._unanswered()
                self._notify("on_turn", turn)
                ended = (
                    self._speech_end if self._speech_end is not None and self._speech_end >= start else now
                )
                self._waiting = _Waiting(activity.state.id, message.via, ended, now)
            self._speech_end = None
            message = CallerSaid(message.text, message.via)
        elif isinstance(message, KeyPressed):
            self._last_key = self._elapsed()
            message = CallerKey(message.digit)
        await activity.handle(message)

    async def _on_disconnected(self, reason: str) -> None:
        self._disconnected = reason
        await self._stop_activity(hung_up=True)
        if self.ahead is not None:
            await self.ahead.aclose()
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
        waiting = self._waiting
        if waiting is not None and waiting.parsed_s is not None and waiting.transitioned_s is None:
            waiting.transitioned_s = self._elapsed()
        crossed = self._limit_crossed()
        if crossed is not None and not self.flow.is_terminated:
            return await self._limit_reached(*crossed)
        await self._enter(self.flow.current)
        self._take_snapshot()
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
        return max(0.0, longest - self._before_s - self._elapsed()) if longest else None

    async def check_limits(self, *, due: bool = False) -> None:
        """Send limit_reached if the call has lasted max_duration_s (``due``: its timer says so)."""
        longest = getattr(self.flow, "max_duration_s", None)
        over = due or (longest is not None and self._before_s + self._elapsed() >= longest - 1e-6)
        if longest and over and not self._limited and not self.flow.is_terminated:
            await self._limit_reached(
                "max_duration_s", f"the call lasted {longest:g} seconds (max_duration_s)"
            )

    def post(self, message: Any) -> None:
        """Put an activity's message in the mailbox."""
        self._mailbox.put_nowait(message)

    async def send(self, event: str, **payload: Any) -> None:
        """Send an event the state waits for; a flow that ignores it is failed, not left hanging."""
        waiting = self._waiting
        if waiting is not None and waiting.parsed_s is None:
            waiting.parsed_s = self._elapsed()
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
        if hook == "on_listen":  # an Ask listens (again): its retry counts are worth keeping
            self._take_snapshot()

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
        self._unanswered()
        self._notify("on_turn", Turn("caller", text, start, now, via, False, state))  # type: ignore[arg-type]
        last_key, self._last_key = self._last_key, None
        ended = last_key if last_key is not None and last_key >= start else now
        self._waiting = _Waiting(state, via, ended, now)  # type: ignore[arg-type]

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

    async def speak(self, token: int, text: str, label: str, *, then: str | None = None) -> None:
        """Speak ``text`` for state ``label``; posts PromptEnded(token) when it has ended.

        ``then``: the event the state sends once this prompt has played; the prompt that event leads
        to is synthesized ahead (:meth:`speak_ahead`) as soon as this one's audio has begun.
        """
        start = self._elapsed()
        latency = self._latency(start)
        deadline_s = self.limits.mark_slack_s + self.limits.mark_s_per_char * len(text)
        waiting = self._waiting
        if waiting is not None and not waiting.claimed:
            waiting.claimed = True  # this prompt answers the caller's last turn (a re-prompt, a reply)
            waiting.parsed_s = start if waiting.parsed_s is None else waiting.parsed_s
            waiting.transitioned_s = start if waiting.transitioned_s is None else waiting.transitioned_s
        else:
            waiting = None
        ahead = self.ahead
        if ahead is not None and ahead.running and ahead.pending != text:
            await ahead.cancel()  # a guess of a path not taken, still synthesizing: never two at once
        voice = _Voice(self, ahead or self.tts, waiting, then)
        try:
            with span("voicefsm.turn", state=label, speaker="agent", chars=len(text)) as turn_span:  # ops
                result = await self.call.speak(voice, text, label=label, mark_timeout_s=deadline_s)
                turn_span.set_attribute("voicefsm.interrupted", result.interrupted)
        except asyncio.CancelledError:
            self._notify(
                "on_turn", Turn("agent", text, start, self._elapsed(), "speech", True, label, latency)
            )
            raise
        except Exception as exc:  # a bug below us must still end the prompt with tts_error
            self.call.log.exception("speaking %r failed", text[:40])
            result = SpeakResult(text, "", error=f"{type(exc).__name__}: {exc}")
        finally:
            if waiting is not None and self._waiting is waiting:
                waiting.claimed = False  # no audio went out: the next prompt answers the turn
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

    def speak_ahead(self, event: str) -> None:
        """The state sends ``event`` next unless the caller changes its course: if the prompt that event
        leads to is already certain (one unguarded transition, every field of the prompt filled; see
        :func:`~voicefsm.flow.prompts.next_prompt`), start synthesizing it now. A no-op when speaking
        ahead is off, or nothing is certain. At most one such synthesis runs; a newer one replaces it.
        """
        ahead = self.ahead
        if ahead is None or not self.line_open():
            return
        state = self._activity.state if self._activity is not None else self.flow.current
        values = template_values(self.flow, caller=self.flow.caller or "", **self._builtins)
        text = next_prompt(state, event, values)
        if text:
            ahead.prefetch(text)

    async def cancel_ahead(self) -> None:
        """The caller's words may change the path: stop a synthesis started ahead that is still running.

        One that already has all its audio is kept: it is played only if its very text is spoken next.
        """
        if self.ahead is not None and self.ahead.running:
            await self.ahead.cancel(keep_finished=True)

    def _first_audio(self, text: str, waiting: _Waiting | None, asked: float, prefetched: bool) -> None:
        """The first audio of ``text`` goes to the caller now: the turn it answers has its latency."""
        if waiting is None or self._waiting is not waiting:
            return
        self._waiting = None
        now = self._elapsed()
        taken = self.ahead.taken if prefetched and self.ahead is not None else None
        if taken is not None and taken.started_at is not None and taken.first_at is not None:
            first_byte: float | None = taken.first_at - taken.started_at
            source = taken.source or "provider"
        else:
            first_byte, source = now - asked, source_of(self.tts) or "provider"
        self._notify("on_turn_latency", waiting.answered(now, first_byte, source, prefetched))

    def _unanswered(self) -> None:
        """The caller's last turn gets no answer (they spoke again, or the call ended): report it so."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._notify("on_turn_latency", waiting.answered(None, None, None, False))

    def _latency(self, start: float) -> float | None:
        if self._last_caller_end is None:
            return None
        latency, self._last_caller_end = max(0.0, start - self._last_caller_end), None
        return latency

    # -- snapshots and resuming (runtime/snapshot.py) ---------------------------------------------

    def snapshot(self) -> FlowSnapshot:
        """The flow as it stands, for resuming it on another stream."""
        state = self.flow.current
        activity = self._activity
        failures = getattr(activity, "failures", None)
        self._snapshot_seq += 1
        return FlowSnapshot(
            call_sid=self.call.call_sid or "",
            flow=self.name,
            fingerprint=flow_fingerprint(type(self.flow)),
            state=state.id,
            slots=slot_values(self.flow),
            builtins=dict(self._builtins),
            failures=dict(failures) if isinstance(failures, dict) else {},
            entries=self._entries,
            same=self._same,
            last_entered=self._last_entered,
            limited=self._limited,
            elapsed_s=self._before_s + self._elapsed(),
            stt_failed=self._stt_failed,
            step_running=activity is not None and activity.running("step"),
            caller=self.flow.caller,
            parameters=dict(self.flow.parameters),
            generation=self._generation,
            seq=self._snapshot_seq,
        )

    def _take_snapshot(self) -> None:
        """Hand the sink a snapshot of a flow still talking with the caller (never of a final state)."""
        if self._snapshots is None or self.flow.is_terminated or not self.line_open():
            return
        try:
            snapshot = self.snapshot()
        except Exception as exc:  # e.g. a slot value JSON cannot hold: the call goes on, unresumable
            self._fail("snapshot", f"{self.name} could not be snapshotted in {self._current_id()}: {exc}")
            return
        self._snapshots.save(snapshot)

    def _end_snapshots(self) -> None:
        """The chart is final: forget the snapshot, unless the line was lost under the flow.

        A stream that closed without Twilio's ``stop`` (dropped socket, lost connection, idle line,
        server shutdown: :func:`~voicefsm.runtime.snapshot.line_lost`) keeps the snapshot: Twilio's
        redirect may bring the call back. A hang-up (``stop``) or an end the flow chose deletes it.
        """
        if self._snapshots is None:
            return
        if line_lost(self._disconnected) and self.flow.steps and self.flow.steps[-1].event == DISCONNECTED:
            return
        self._snapshots.delete(self.call.call_sid or "", self._generation)
        self._snapshot_dropped = True

    async def _snapshot_deleted(self) -> None:
        """Before the stream closes, let the deletion of an ended flow's snapshot reach the database
        (bounded): Twilio's redirect that follows, on any worker, must find no snapshot to resume."""
        settled = getattr(self._snapshots, "settled", None)
        if settled is None or not self._snapshot_dropped:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_S):
                await settled(self.call.call_sid or "")

    async def _resume(self, snapshot: FlowSnapshot) -> None:
        """Go on in the restored state: say we were cut off, then the state's question again.

        An Ask asks again (its retry counts kept), a Say is said again, a Do step that had not
        started runs; one that had started runs again only when its state is ``idempotent=True``,
        otherwise it ends with ``failure`` (it may have done its work: it is never run twice).
        """
        state = self.flow.current
        self._notify("on_transition", state.id, RESUMED, state.id)
        if self.call.is_disconnected:
            await self._on_disconnected(self.call.disconnect_reason or "hangup")
            return
        apology = getattr(self.flow, "resume_apology", RESUME_APOLOGY)
        if apology:
            await self.speak(next(self._tokens), apology, RESUMED)  # its PromptEnded is nobody's
        if self.call.is_disconnected:
            await self._on_disconnected(self.call.disconnect_reason or "hangup")
            return
        kind = kind_for(state)
        if snapshot.step_running and not getattr(kind, "idempotent", False):
            error = (
                f"the call was cut off while step {state.id} ran; it is not run again "
                f"(it may have done its work: declare Do(..., idempotent=True) to re-run it on resume)"
            )
            self._fail("step", error)
            self._notify("on_step", state.id, FAILURE, error)
            self.set_builtin("error", "the call was cut off")
            await self._send_waited(FAILURE, error=error)
            return
        activity = self._activity = kind.activity(self)
        failures = getattr(activity, "failures", None)
        if isinstance(failures, dict):
            failures.update(snapshot.failures)
        await activity.enter()
        self._take_snapshot()

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
        elif kind == "step" and error is not None and not isinstance(error, StepFailedError):
            # faults: a step that raised is a bug in flow code: its traceback, with the CallSid.
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


class _Voice:
    """The synthesizer of one prompt: the runtime's (or its prefetcher), noting the first audio."""

    name = "voice"

    def __init__(
        self, runtime: FlowRuntime, tts: TextToSpeech, waiting: _Waiting | None, then: str | None
    ) -> None:
        self.runtime = runtime
        self.tts = tts
        self.waiting = waiting
        self.then = then

    @property
    def on_error(self) -> TextCallback | None:
        return self.tts.on_error

    @on_error.setter
    def on_error(self, callback: TextCallback | None) -> None:
        self.tts.on_error = callback

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        runtime = self.runtime
        ahead = runtime.ahead
        before = ahead.taken if ahead is not None else None
        asked = runtime.elapsed()
        first = True
        async with contextlib.aclosing(self.tts.synthesize(text)) as chunks:
            async for chunk in chunks:
                if first:
                    first = False
                    prefetched = ahead is not None and ahead.taken is not before
                    runtime._first_audio(text, self.waiting, asked, prefetched)
                    if self.then is not None:
                        runtime.speak_ahead(self.then)  # waits until this prompt has all its audio
                yield chunk

    async def aclose(self) -> None:
        return None  # the runtime's synthesizer is closed by whoever made it


def _where(function: Callable[..., Any]) -> str | None:
    """``file:line`` of a function's definition, for messages that name flow code."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None
