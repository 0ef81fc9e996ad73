"""Run a :class:`~voicefsm.flow.chart.VoiceFlow` on a :class:`~voicefsm.runtime.call.Call`.

One :class:`FlowRuntime` per call. Its :meth:`~FlowRuntime.run` coroutine is the call's
mailbox: call events (speech, keys, errors, hang-up) and the results of the state's own
tasks arrive there, and it is the only code that sends events to the chart. Whatever the
chart does, it does between two messages, so a hang-up never waits behind a prompt.

Each state the chart enters gets its work started by the runtime and cancelled (and
awaited) when the chart leaves it:

- **Say**: speak the prompt; ``spoken`` when its mark comes back (or the caller barges in),
  ``tts_error`` when synthesis or playback fails. Every prompt ends in exactly one of
  spoken / tts_error / disconnected.
- **Ask**: set the recognizer's hints, speak the prompt, then listen. The no-input timer
  starts when the prompt's mark says it has played (or was interrupted), and restarts while
  the caller is heard speaking. Speech is parsed by the state's expectation; keys are collected
  until the terminator, the expectation's length, or a pause of ``inter_digit_s``. A value the
  slot model accepts is ``filled``; silence and unusable answers are re-prompted ``retries``
  times, then ``no_input`` / ``no_match``.
- **Endings**: once the chart is final, say the goodbye, transfer / text / echo, and hang up.

Barge-in: while an interruptible prompt plays, the caller's first interim transcript (or a
key) stops it and clears the line's buffer. Interim transcripts never reach the chart. Speech
committed while a non-interruptible prompt plays is ignored (it answered something the caller
did not hear to the end); keys pressed then are ignored too. Keys pressed during a Say that is
interrupted by them are not kept for the next question.

A speech-recognition failure reaches the chart as ``stt_error`` in a listening state; one
that happens while the flow is talking is held until the next Ask is entered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from statemachine import State

from voicefsm.core.actions import TelephonyActions
from voicefsm.core.events import (
    CallEvent,
    Committed,
    Disconnected,
    Dtmf,
    Recognizing,
    SttError,
)
from voicefsm.flow.chart import Step, VoiceFlow
from voicefsm.flow.errors import FlowError, SlotRejected, TemplateError
from voicefsm.flow.expect import NoMatch
from voicefsm.flow.slots import assign_slot, render_template, slot_values
from voicefsm.flow.states import (
    DISCONNECTED,
    ERROR_EXECUTION,
    FILLED,
    NO_INPUT,
    NO_MATCH,
    SPOKEN,
    STT_ERROR,
    TTS_ERROR,
    Ask,
    Echo,
    Ending,
    Say,
    SendSms,
    Transfer,
    VoiceState,
)
from voicefsm.providers.base import TextToSpeech, hints_from_phrases
from voicefsm.runtime.call import Call, SpeakResult
from voicefsm.runtime.clock import Clock, LoopClock

log = logging.getLogger(__name__)

Speaker = Literal["agent", "caller"]
Via = Literal["speech", "dtmf", "text"]
NOTHING_HEARD = "I didn't hear anything"


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance on the line, in clock seconds; ``latency_s`` is the silence before an agent turn."""

    speaker: Speaker
    text: str
    start_s: float
    end_s: float
    via: Via = "speech"
    interrupted: bool = False
    state: str | None = None
    latency_s: float | None = None


class FlowListener:
    """Hooks for records, live views and tests; override what you need. Called on the loop, never awaited.

    A listener that raises is logged and otherwise ignored: it never ends a call.
    """

    def on_transition(self, source: str, event: str, target: str) -> None:
        """The chart moved (``source == target`` for a re-entry)."""

    def on_turn(self, turn: Turn) -> None:
        """An utterance ended: an agent prompt (played, interrupted or failed) or caller speech / keys."""

    def on_listen(self, state: str) -> None:
        """The runtime starts listening in ``state`` (its prompt has played or was interrupted)."""

    def on_slot(self, name: str, value: object) -> None:
        """A slot was filled."""

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Something failed: ``kind`` is tts, stt, flow, action or runtime."""


@dataclass(frozen=True, slots=True)
class FlowResult:
    """How a call's flow ended."""

    flow: str
    final_state: str | None
    outcome: str
    slots: dict[str, Any]
    ended_by: str | None
    path: tuple[Step, ...]


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


CallHandler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _PromptEnded:
    token: int
    result: SpeakResult


@dataclass(frozen=True, slots=True)
class _TimerFired:
    token: int
    kind: str


_Message = CallEvent | _PromptEnded | _TimerFired


@dataclass(eq=False)
class _Activity:
    """What the runtime is doing for the state the chart is in."""

    state: State
    phase: Literal["idle", "prompting", "listening"] = "idle"
    prompt_task: asyncio.Task[None] | None = None
    prompt_token: int | None = None
    timer_task: asyncio.Task[None] | None = None
    timer_token: int | None = None
    timer_kind: str = ""
    timer_deadline: float = 0.0
    retired: list[asyncio.Task[None]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    digits: str = ""
    keys_started: float | None = None


class _FlowStuckError(FlowError):
    def __init__(self, flow: str, state: str, event: str) -> None:
        super().__init__(flow, state, event)
        self.flow, self.state, self.event = flow, state, event

    def __str__(self) -> str:
        return f"{self.flow}.{self.state} took no transition on {self.event}, so the call could not go on"


class FlowRuntime:
    """Drives one flow instance on one call. Create it on the call's loop; :meth:`run` it once."""

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
    ) -> None:
        self.flow = (
            flow if isinstance(flow, VoiceFlow) else flow(caller=call.caller, parameters=call.parameters)
        )
        self.call = call
        self.tts = tts
        self.actions = actions
        self.clock: Clock = clock or LoopClock()
        self.listeners = tuple(listeners)
        self.today = today
        self.limits = limits or RuntimeLimits()
        self._mailbox: asyncio.Queue[_Message] = asyncio.Queue()
        self._tokens = itertools.count(1)
        self._activity: _Activity | None = None
        self._steps_seen = 0
        self._reason = ""
        self._stt_failed: str | None = None
        self._disconnected: str | None = None
        self._aborted = False
        self._ran = False
        self._caller_started: float | None = None
        self._last_caller_end: float | None = None

    @property
    def name(self) -> str:
        """The flow's class name."""
        return type(self.flow).__name__

    # -- the mailbox --------------------------------------------------------------------------

    async def run(self) -> FlowResult:
        """Run the flow until the chart is final and the call has ended; leaves no task behind."""
        if self._ran:
            raise RuntimeError("a FlowRuntime runs once; make a new one (and a new flow) per call")
        self._ran = True
        unsubscribe = self.call.subscribe(self._post)
        try:
            await self._activate()
            while not self.flow.is_terminated and not self._aborted:
                await self._handle(await self._mailbox.get())
            await self._stop_activity()
            await self._finish()
        finally:
            unsubscribe()
            await self._stop_activity()
        return self._result()

    def _post(self, event: CallEvent) -> None:
        if isinstance(event, Committed | Recognizing | Dtmf | SttError | Disconnected):
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
        self._report_steps()
        if self.call.is_disconnected:
            self._disconnected = self.call.disconnect_reason or "hangup"
            await self._send(DISCONNECTED, reason=self._disconnected)
            return
        await self._enter(self.flow.current)

    async def _handle(self, message: _Message) -> None:
        if isinstance(message, Disconnected):
            await self._on_disconnected(message.reason)
            return
        if isinstance(message, SttError):
            self._fail("stt", f"speech recognition failed: {message.reason}")
            self._stt_failed = message.reason
        activity = self._activity
        if activity is None:
            return
        state = activity.state
        if isinstance(message, _PromptEnded):
            if message.token == activity.prompt_token:
                activity.prompt_token, activity.prompt_task = None, None
                await self._prompt_ended(activity, message.result)
        elif isinstance(message, _TimerFired):
            if message.token == activity.timer_token:
                activity.timer_token, activity.timer_task = None, None
                await self._timer_fired(activity, message.kind)
        elif isinstance(message, SttError):
            if isinstance(state, Ask):
                await self._send_waited(STT_ERROR, reason=message.reason)
        elif isinstance(message, Recognizing):
            self._caller_started = self._caller_started or self.clock.now()
            await self._heard_partial(activity)
        elif isinstance(message, Committed):
            await self._heard(activity, message.text)
        elif isinstance(message, Dtmf):
            await self._key(activity, message.digit)

    async def _on_disconnected(self, reason: str) -> None:
        self._disconnected = reason
        await self._stop_activity()
        if not self.flow.is_terminated:
            await self._send(DISCONNECTED, reason=reason)
        if not self.flow.is_terminated:
            self.call.log.warning(
                "%s did not reach a final state on disconnected (in %s)", self.name, self.flow.current.id
            )
            self._aborted = True

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
        await self._enter(self.flow.current)
        return True

    async def _send_waited(self, event: str, **payload: Any) -> None:
        """Send an event the state waits for; a flow that ignores it is failed, not left hanging."""
        state = self.flow.current
        if await self._send(event, **payload) or self.flow.is_terminated or self._aborted:
            return
        stuck = _FlowStuckError(self.name, state.id, event)
        self._fail("flow", str(stuck), stuck)
        if event == ERROR_EXECUTION or not await self._send(ERROR_EXECUTION, error=stuck):
            self._aborted = not self.flow.is_terminated

    def _report_steps(self) -> bool:
        steps = self.flow.steps[self._steps_seen :]
        self._steps_seen = len(self.flow.steps)
        for step in steps:
            self._notify("on_transition", step.source, step.event, step.target)
        return bool(steps)

    # -- entering a state ---------------------------------------------------------------------

    async def _enter(self, state: State) -> None:
        activity = self._activity = _Activity(state)
        if state.final or self._disconnected is not None:
            return
        if isinstance(state, Say | Ask):
            if isinstance(state, Ask) and self._stt_failed is not None:
                await self._send_waited(STT_ERROR, reason=self._stt_failed)
                return
            try:
                text = self._render(state, state.prompt or "")
            except TemplateError as exc:
                await self._send_waited(ERROR_EXECUTION, error=exc)
                return
            if isinstance(state, Ask):
                self._set_hints(state)
            if text:
                self._start_prompt(activity, text)
            elif isinstance(state, Ask):
                self._listen(activity)
            else:
                await self._send_waited(SPOKEN, interrupted=False)
        else:
            # A plain State moves on by an eventless transition inside the chart; still here means stuck.
            stuck = _FlowStuckError(self.name, state.id, "(eventless)")
            self._fail("flow", str(stuck), stuck)
            await self._send_waited(ERROR_EXECUTION, error=stuck)

    def _set_hints(self, state: Ask) -> None:
        stt = self.call.stt
        if stt is None or state.expectation is None:
            return
        expectation = state.expectation
        try:
            stt.set_hints(
                hints_from_phrases(expectation.phrases(), open_vocabulary=expectation.open_vocabulary())
            )
        except Exception:
            self.call.log.exception("the recognizer refused hints for %s", state.id)

    def _render(self, state: State, template: str) -> str:
        """Fill a template from the slots; raises TemplateError (already reported)."""
        values = {**slot_values(self.flow.slots), "caller": self.flow.caller or "", "reason": self._reason}
        try:
            return render_template(template, values)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            error = TemplateError(self.name, state.id, template, f"{type(exc).__name__}: {exc}")
            self._fail("flow", str(error), error)
            raise error from exc

    # -- prompts ------------------------------------------------------------------------------

    def _start_prompt(self, activity: _Activity, text: str) -> None:
        token = next(self._tokens)
        activity.phase = "prompting"
        activity.prompt_token = token
        name = f"flow-prompt-{activity.state.id}"
        activity.prompt_task = asyncio.create_task(self._speak(token, activity.state.id, text), name=name)

    async def _speak(self, token: int, state: str, text: str) -> None:
        start = self.clock.now()
        latency = self._latency(start)
        deadline_s = self.limits.mark_slack_s + self.limits.mark_s_per_char * len(text)
        try:
            result = await self.call.speak(self.tts, text, label=state, mark_timeout_s=deadline_s)
        except asyncio.CancelledError:
            self._notify(
                "on_turn", Turn("agent", text, start, self.clock.now(), "speech", True, state, latency)
            )
            raise
        except Exception as exc:  # a bug below us must still end the prompt with tts_error
            self.call.log.exception("speaking %r failed", text[:40])
            result = SpeakResult(text, "", error=f"{type(exc).__name__}: {exc}")
        if not (result.call_disconnected or result.error):  # a failed prompt is an error, not a turn
            turn = Turn("agent", text, start, self.clock.now(), "speech", result.interrupted, state, latency)
            self._notify("on_turn", turn)
        self._mailbox.put_nowait(_PromptEnded(token, result))

    def _latency(self, start: float) -> float | None:
        if self._last_caller_end is None:
            return None
        latency, self._last_caller_end = max(0.0, start - self._last_caller_end), None
        return latency

    async def _cancel_prompt(self, activity: _Activity) -> None:
        task, activity.prompt_task, activity.prompt_token = activity.prompt_task, None, None
        await _cancel(task)

    async def _prompt_ended(self, activity: _Activity, result: SpeakResult) -> None:
        if result.error is not None:
            self._fail("tts", f"could not speak in {activity.state.id}: {result.error}")
            await self._send_waited(TTS_ERROR, reason=result.error)
        elif result.call_disconnected:
            activity.phase = "idle"  # the Disconnected event is on its way
        elif isinstance(activity.state, Say):
            await self._send_waited(SPOKEN, interrupted=result.interrupted)
        else:
            self._listen(activity)

    # -- listening ----------------------------------------------------------------------------

    def _listen(self, activity: _Activity) -> None:
        activity.phase = "listening"
        state = activity.state
        assert isinstance(state, Ask)
        self._arm(activity, NO_INPUT, state.no_input_s)
        self._notify("on_listen", state.id)

    def _arm(self, activity: _Activity, kind: str, seconds: float) -> None:
        """Start (or push back) the state's timer: one task per timer, re-arming only moves its deadline."""
        activity.timer_deadline = self.clock.now() + seconds
        task = activity.timer_task
        if task is not None and activity.timer_kind == kind and not task.done():
            return
        self._disarm(activity)
        token = next(self._tokens)
        activity.timer_kind, activity.timer_token = kind, token
        activity.timer_task = asyncio.create_task(self._timer(activity, token), name=f"flow-{kind}-timer")

    def _disarm(self, activity: _Activity) -> None:
        # Cancelled now, awaited when the state is left; its token is gone, so a late message is dropped.
        if activity.timer_task is not None:
            activity.timer_task.cancel()
            activity.retired = [task for task in activity.retired if not task.done()] + [activity.timer_task]
        activity.timer_task, activity.timer_token = None, None

    async def _timer(self, activity: _Activity, token: int) -> None:
        while (remaining := activity.timer_deadline - self.clock.now()) > 0:
            await self.clock.sleep(remaining)
        self._mailbox.put_nowait(_TimerFired(token, activity.timer_kind))

    async def _barge_in(self, activity: _Activity) -> bool:
        """Stop an interruptible prompt; True when the caller may now be heard."""
        if activity.phase != "prompting":
            return activity.phase == "listening"
        state = activity.state
        if not (isinstance(state, VoiceState) and state.barge_in):
            return False
        await self._cancel_prompt(activity)
        if isinstance(state, Say):
            activity.phase = "idle"
            await self._send_waited(SPOKEN, interrupted=True)
            return False
        self._listen(activity)
        return True

    async def _heard_partial(self, activity: _Activity) -> None:
        if await self._barge_in(activity) and isinstance(activity.state, Ask) and not activity.digits:
            self._arm(activity, NO_INPUT, activity.state.no_input_s)  # the caller is talking: not silent

    async def _heard(self, activity: _Activity, text: str) -> None:
        now = self.clock.now()
        start, self._caller_started = self._caller_started or now, None
        state = activity.state
        if not text.strip():  # noise the recognizer gave up on: not an answer, but not silence either
            if activity.phase == "listening" and isinstance(state, Ask) and not activity.digits:
                self._arm(activity, NO_INPUT, state.no_input_s)
            return
        self._last_caller_end = now
        self._notify("on_turn", Turn("caller", text, start, now, "speech", False, state.id))
        if not isinstance(state, Ask) or not await self._barge_in(activity) or activity.digits:
            if isinstance(state, Say):
                await self._barge_in(activity)
            return
        self._disarm(activity)
        assert state.expectation is not None
        await self._answer(activity, state.expectation.parse_text(text, today=self.today()), "speech")

    async def _key(self, activity: _Activity, digit: str) -> None:
        state = activity.state
        if isinstance(state, Say):
            await self._barge_in(activity)
            return
        if not isinstance(state, Ask) or not state.keypad or not await self._barge_in(activity):
            return
        assert state.expectation is not None
        keypad = state.expectation.keypad()
        if not activity.digits:
            activity.keys_started = self.clock.now()
        activity.digits += digit
        typed = activity.digits
        if keypad.terminator and typed.endswith(keypad.terminator):
            typed = typed[: -len(keypad.terminator)]
        ended = bool(keypad.terminator) and digit == keypad.terminator
        if ended or keypad.max_digits <= 1 or len(typed) >= keypad.max_digits:
            await self._keys_done(activity)
        else:
            self._arm(activity, "inter_digit", self.limits.inter_digit_s)

    async def _keys_done(self, activity: _Activity) -> None:
        digits, activity.digits = activity.digits, ""
        self._disarm(activity)
        now = self.clock.now()
        self._last_caller_end = now
        turn = Turn("caller", digits, activity.keys_started or now, now, "dtmf", False, activity.state.id)
        self._notify("on_turn", turn)
        state = activity.state
        assert isinstance(state, Ask) and state.expectation is not None
        await self._answer(activity, state.expectation.parse_dtmf(digits, today=self.today()), "dtmf")

    async def _timer_fired(self, activity: _Activity, kind: str) -> None:
        if kind == "inter_digit":
            await self._keys_done(activity)
        elif kind == NO_INPUT and activity.phase == "listening":
            self._caller_started = None
            await self._retry(activity, NO_INPUT, NOTHING_HEARD)

    async def _answer(self, activity: _Activity, parsed: Any, via: Via) -> None:
        state = activity.state
        assert isinstance(state, Ask)
        if isinstance(parsed, NoMatch):
            await self._retry(activity, NO_MATCH, parsed.reason, parsed.text)
            return
        value = parsed.value
        if state.slot is not None:
            try:
                value = assign_slot(self.flow.slots, state.slot, value)
            except SlotRejected as exc:
                await self._retry(activity, NO_MATCH, exc.reason, parsed.text)
                return
            self._notify("on_slot", state.slot, value)
        self._reason = ""
        await self._send_waited(FILLED, value=value, slot=state.slot, text=parsed.text, via=via)

    async def _retry(self, activity: _Activity, failure: str, reason: str, text: str = "") -> None:
        state = activity.state
        assert isinstance(state, Ask)
        self._reason = reason
        count = activity.failures[failure] = activity.failures.get(failure, 0) + 1
        if count > state.retries:
            payload = {"reason": reason, "text": text} if failure == NO_MATCH else {"reason": reason}
            await self._send_waited(failure, **payload)
            return
        try:
            prompt = self._render(state, state.reprompt_for(failure, count))
        except TemplateError as exc:
            await self._send_waited(ERROR_EXECUTION, error=exc)
            return
        if prompt:
            self._start_prompt(activity, prompt)
        else:
            self._listen(activity)

    async def _stop_activity(self) -> None:
        activity, self._activity = self._activity, None
        if activity is None:
            return
        tasks = [activity.prompt_task, activity.timer_task, *activity.retired]
        activity.prompt_task = activity.timer_task = None
        activity.prompt_token = activity.timer_token = None
        activity.retired = []
        await _cancel(*tasks)

    # -- the end ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        state = self.flow.current if self.flow.is_terminated else None
        if isinstance(state, Ending):
            await self._end(state)
            reason = state.outcome
        else:
            if self._disconnected is None:
                await self._say_last(self.flow.apology, "failed")
            reason = "error"
        if self._disconnected is None:
            self.call.request_disconnect(reason)
            await self._wait_for_hangup()

    async def _end(self, state: Ending) -> None:
        connected = self._disconnected is None
        try:
            if connected and state.prompt:
                await self._say_last(self._render(state, state.prompt), state.id)
            if isinstance(state, Transfer):
                number = self._render(state, state.number)
                if not connected:
                    self.call.log.info("not transferring from %s: the call has already ended", state.id)
                else:
                    await self._act(
                        "transfer", lambda actions: actions.transfer(self.call.call_sid or "", number)
                    )
            elif isinstance(state, SendSms):
                to = self._render(state, state.recipient) if state.recipient else self.flow.caller
                body = self._render(state, state.body)
                if not to:
                    self._fail("action", f"{state.id}: no number to text (the caller's number is unknown)")
                else:
                    await self._act("send_sms", lambda actions: actions.send_sms(to, body))
            elif isinstance(state, Echo) and connected:
                await self._echo(state)
        except TemplateError:
            if self._disconnected is None:
                await self._say_last(self.flow.apology, state.id)

    async def _say_last(self, text: str, state: str) -> None:
        """Speak without a mailbox to answer to: the chart is final, only the line is left."""
        await self._speak(next(self._tokens), state, text)

    async def _act(self, action: str, make: Callable[[TelephonyActions], Coroutine[Any, Any, Any]]) -> None:
        if self.actions is None:
            self._fail("action", f"cannot {action}: this runtime was given no TelephonyActions")
            return
        try:
            async with asyncio.timeout(self.limits.action_timeout_s):
                await make(self.actions)
        except Exception as exc:
            self._fail("action", f"{action} failed: {exc}", exc)

    async def _echo(self, state: Echo) -> None:
        if self.call.stt is not None:
            await self.call.stop_stt()  # the recognizer reads the caller's audio; the echo needs it
        self.call.clear_inbound()
        pump = asyncio.create_task(self._echo_frames(), name="flow-echo")
        limit = asyncio.create_task(self.clock.sleep(state.max_s), name="flow-echo-limit")
        try:
            await asyncio.wait({pump, limit}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(pump, limit)

    async def _echo_frames(self) -> None:
        while (frame := await self.call.inbound.get()) is not None:
            self.call.put_outbound(frame)

    async def _wait_for_hangup(self) -> None:
        waiter = asyncio.create_task(self.call.disconnected.wait(), name="flow-hangup-wait")
        limit = asyncio.create_task(self.clock.sleep(self.limits.hangup_wait_s), name="flow-hangup-limit")
        try:
            await asyncio.wait({waiter, limit}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(waiter, limit)

    def _result(self) -> FlowResult:
        terminated = self.flow.is_terminated
        state = self.flow.current if terminated else None
        if self._aborted and not terminated:
            outcome = "error" if self._disconnected is None else "hung_up"
        elif state is None:
            outcome = "incomplete"
        elif self.flow.steps and self.flow.steps[-1].event == DISCONNECTED:
            outcome = "hung_up"
        else:
            outcome = state.outcome if isinstance(state, Ending) else "completed"
        return FlowResult(
            flow=self.name,
            final_state=state.id if state is not None else None,
            outcome=outcome,
            slots=self.flow.slots.model_dump(exclude=set(type(self.flow.slots).model_computed_fields)),
            ended_by=self._disconnected or self.call.hangup_reason,
            path=tuple(self.flow.steps),
        )

    # -- reporting ----------------------------------------------------------------------------

    def _fail(self, kind: str, message: str, error: BaseException | None = None) -> None:
        if kind == "flow" and error is not None and not isinstance(error, FlowError):
            self.call.log.error("%s", message, exc_info=error)
        else:
            self.call.log.warning("%s", message)
        self._notify("on_error", kind, message, error)

    def _notify(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, hook)(*args)
            except Exception:
                self.call.log.exception("flow listener %r failed in %s", listener, hook)


async def _cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and wait until they have finished (a cancellation of the caller still propagates)."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was reported where it happened


def flow_handler(
    flow: type[VoiceFlow],
    tts_factory: Callable[[], TextToSpeech],
    *,
    actions: TelephonyActions | None = None,
    clock: Clock | None = None,
    listeners: Callable[[Call], Sequence[FlowListener]] | None = None,
    limits: RuntimeLimits | None = None,
) -> CallHandler:
    """A media-loop handler that runs ``flow`` on each call, with a fresh synthesizer per call."""

    async def handle(call: Call) -> None:
        tts = tts_factory()
        try:
            runtime = FlowRuntime(
                flow,
                call,
                tts,
                actions=actions,
                clock=clock,
                listeners=listeners(call) if listeners is not None else (),
                limits=limits,
            )
            await runtime.run()
        finally:
            await tts.aclose()

    return handle
