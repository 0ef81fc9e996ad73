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
from dataclasses import dataclass
from typing import Any

from statemachine import State

from voicefsm.core.actions import TelephonyActions
from voicefsm.core.events import (
    CallEvent,
    Committed,
    Disconnected,
    KeyPressed,
    Recognizing,
    SttError,
)
from voicefsm.flow.chart import VoiceFlow
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
from voicefsm.runtime.flow_activity import FlowStuckError, PromptEnded, StateActivity, TimerFired
from voicefsm.runtime.flow_endings import echo_caller, wait_for_hangup
from voicefsm.runtime.flow_listener import FlowListener, FlowResult, Turn, Via

__all__ = [
    "CallHandler",
    "FlowListener",
    "FlowResult",
    "FlowRuntime",
    "RuntimeLimits",
    "Turn",
]

log = logging.getLogger(__name__)

NOTHING_HEARD = "I didn't hear anything"


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


_Message = CallEvent | PromptEnded | TimerFired


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
        self._activity: StateActivity | None = None
        self._steps_seen = 0
        self._reason = ""
        self._stt_failed: str | None = None
        self._disconnected: str | None = None
        self._aborted = False
        self._ran = False
        self._t0 = 0.0
        self._caller_started: float | None = None
        self._last_caller_end: float | None = None

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
        if isinstance(event, Committed | Recognizing | KeyPressed | SttError | Disconnected):
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
            await self._on_disconnected(self.call.disconnect_reason or "hangup")
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
        if isinstance(message, PromptEnded):
            if activity.claim(message):
                await self._prompt_ended(activity, message.result)
        elif isinstance(message, TimerFired):
            if activity.claim(message):
                await self._timer_fired(activity, message.kind)
        elif isinstance(message, SttError):
            if isinstance(state, Ask):
                await self._send_waited(STT_ERROR, reason=message.reason)
        elif isinstance(message, Recognizing):
            self._caller_started = self._caller_started or self._elapsed()
            await self._heard_partial(activity)
        elif isinstance(message, Committed):
            await self._heard(activity, message.text)
        elif isinstance(message, KeyPressed):
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
        stuck = FlowStuckError(self.name, state.id, event)
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
        activity = self._activity = StateActivity(state, self.clock, self._mailbox.put_nowait, self._tokens)
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
            stuck = FlowStuckError(self.name, state.id, "(eventless)")
            self._fail("flow", str(stuck), stuck)
            await self._send_waited(ERROR_EXECUTION, error=stuck)

    def _set_hints(self, state: Ask) -> None:
        stt = self.call.stt
        if stt is None or state.expectation is None:
            return
        expectation = state.expectation
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

    def _start_prompt(self, activity: StateActivity, text: str) -> None:
        activity.start_prompt(lambda token: self._speak(token, activity.state.id, text))

    async def _speak(self, token: int, state: str, text: str) -> None:
        start = self._elapsed()
        latency = self._latency(start)
        deadline_s = self.limits.mark_slack_s + self.limits.mark_s_per_char * len(text)
        try:
            result = await self.call.speak(self.tts, text, label=state, mark_timeout_s=deadline_s)
        except asyncio.CancelledError:
            self._notify(
                "on_turn", Turn("agent", text, start, self._elapsed(), "speech", True, state, latency)
            )
            raise
        except Exception as exc:  # a bug below us must still end the prompt with tts_error
            self.call.log.exception("speaking %r failed", text[:40])
            result = SpeakResult(text, "", error=f"{type(exc).__name__}: {exc}")
        if not (result.call_disconnected or result.error):  # a failed prompt is an error, not a turn
            turn = Turn("agent", text, start, self._elapsed(), "speech", result.interrupted, state, latency)
            self._notify("on_turn", turn)
        self._mailbox.put_nowait(PromptEnded(token, result))

    def _latency(self, start: float) -> float | None:
        if self._last_caller_end is None:
            return None
        latency, self._last_caller_end = max(0.0, start - self._last_caller_end), None
        return latency

    async def _prompt_ended(self, activity: StateActivity, result: SpeakResult) -> None:
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

    def _listen(self, activity: StateActivity) -> None:
        activity.phase = "listening"
        state = activity.state
        assert isinstance(state, Ask)
        activity.arm(NO_INPUT, state.no_input_s)
        self._notify("on_listen", state.id)

    async def _barge_in(self, activity: StateActivity) -> bool:
        """Stop an interruptible prompt; True when the caller may now be heard."""
        if activity.phase != "prompting":
            return activity.phase == "listening"
        state = activity.state
        if not (isinstance(state, VoiceState) and state.barge_in):
            return False
        await activity.cancel_prompt()
        if isinstance(state, Say):
            activity.phase = "idle"
            await self._send_waited(SPOKEN, interrupted=True)
            return False
        self._listen(activity)
        return True

    async def _heard_partial(self, activity: StateActivity) -> None:
        if await self._barge_in(activity) and isinstance(activity.state, Ask) and not activity.digits:
            activity.arm(NO_INPUT, activity.state.no_input_s)  # the caller is talking: not silent

    async def _heard(self, activity: StateActivity, text: str) -> None:
        now = self._elapsed()
        start, self._caller_started = self._caller_started or now, None
        state = activity.state
        if not text.strip():  # noise the recognizer gave up on: not an answer, but not silence either
            if activity.phase == "listening" and isinstance(state, Ask) and not activity.digits:
                activity.arm(NO_INPUT, state.no_input_s)
            return
        self._last_caller_end = now
        self._notify("on_turn", Turn("caller", text, start, now, "speech", False, state.id))
        if not isinstance(state, Ask) or not await self._barge_in(activity) or activity.digits:
            if isinstance(state, Say):
                await self._barge_in(activity)
            return
        activity.disarm()
        assert state.expectation is not None
        await self._answer(activity, state.expectation.parse_text(text, today=self.today()), "speech")

    async def _key(self, activity: StateActivity, digit: str) -> None:
        state = activity.state
        if isinstance(state, Say):
            await self._barge_in(activity)
            return
        if not isinstance(state, Ask) or not state.keypad or not await self._barge_in(activity):
            return
        assert state.expectation is not None
        keypad = state.expectation.keypad()
        if not activity.digits:
            activity.keys_started = self._elapsed()
        activity.digits += digit
        typed = activity.digits
        if keypad.terminator and typed.endswith(keypad.terminator):
            typed = typed[: -len(keypad.terminator)]
        ended = bool(keypad.terminator) and digit == keypad.terminator
        if ended or keypad.max_digits <= 1 or len(typed) >= keypad.max_digits:
            await self._keys_done(activity)
        else:
            activity.arm("inter_digit", self.limits.inter_digit_s)

    async def _keys_done(self, activity: StateActivity) -> None:
        digits, activity.digits = activity.digits, ""
        activity.disarm()
        now = self._elapsed()
        self._last_caller_end = now
        turn = Turn("caller", digits, activity.keys_started or now, now, "dtmf", False, activity.state.id)
        self._notify("on_turn", turn)
        state = activity.state
        assert isinstance(state, Ask) and state.expectation is not None
        await self._answer(activity, state.expectation.parse_dtmf(digits, today=self.today()), "dtmf")

    async def _timer_fired(self, activity: StateActivity, kind: str) -> None:
        if kind == "inter_digit":
            await self._keys_done(activity)
        elif kind == NO_INPUT and activity.phase == "listening":
            self._caller_started = None
            await self._retry(activity, NO_INPUT, NOTHING_HEARD)

    async def _answer(self, activity: StateActivity, parsed: Any, via: Via) -> None:
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

    async def _retry(self, activity: StateActivity, failure: str, reason: str, text: str = "") -> None:
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
        if activity is not None:
            await activity.stop()

    # -- the end ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        if self._disconnected is None and self.call.is_disconnected:  # its event is still in the mailbox
            self._disconnected = self.call.disconnect_reason or "hangup"
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
            await wait_for_hangup(self.call, self.clock, self.limits.hangup_wait_s)

    def _line_open(self) -> bool:
        return self._disconnected is None and not self.call.is_disconnected

    async def _end(self, state: Ending) -> None:
        try:
            goodbye = self._render(state, state.prompt) if state.prompt else ""
            if goodbye and self._line_open():
                await self._say_last(goodbye, state.id)
            if isinstance(state, Transfer):
                number = self._render(state, state.number)
                if not self._line_open():
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
            elif isinstance(state, Echo) and self._line_open():
                await echo_caller(self.call, self.clock, state.max_s)
        except TemplateError:
            if self._line_open():
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
            try:
                getattr(listener, hook)(*args)
            except Exception:
                self.call.log.exception("flow listener %r failed in %s", listener, hook)
