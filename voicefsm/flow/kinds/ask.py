"""``Ask``: speak a prompt, then listen for speech or keys until filled / no_input / no_match.

The no-input timer starts when the prompt's mark says it has played (or was interrupted), and
restarts while the caller is heard speaking. Speech is parsed by the state's expectation; keys
are collected until the terminator, the expectation's length, or a pause of ``inter_digit_s``.
A value the slot model accepts is ``filled``; silence and unusable answers are re-prompted
``retries`` times, then ``no_input`` / ``no_match``. Speech committed while a non-interruptible
prompt plays is ignored (it answered something the caller did not hear to the end); so are keys.
A recognizer failure is ``stt_error``, also one that happened before the state was entered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from voicefsm.flow.errors import SlotRejected, TemplateError
from voicefsm.flow.expect_base import NoMatch
from voicefsm.flow.kinds.base import (
    DISCONNECTED,
    ERROR_EXECUTION,
    FAILED,
    FILLED,
    NO_INPUT,
    NO_MATCH,
    STT_ERROR,
    TTS_ERROR,
    Activity,
    ActivityHost,
    CallerKey,
    CallerSaid,
    CallerSpeaking,
    Message,
    PromptEnded,
    StateKind,
    SttFailed,
    TimerFired,
    ladder,
)
from voicefsm.flow.kinds.say import PromptActivity
from voicefsm.flow.slots import assign_slot, slot_names, slots_model_problem

if TYPE_CHECKING:
    from voicefsm.flow.expect import Expectation

DEFAULT_NO_MATCH_PREFIX = "Sorry, {reason}."
DEFAULT_NO_INPUT_PREFIX = "Sorry, I didn't hear anything."
NOTHING_HEARD = "I didn't hear anything"


class Ask(StateKind):
    """Speak ``prompt``, then listen for speech or keys until one of filled / no_input / no_match.

    What is accepted comes from ``expect`` or, when it is not given, from the type of the slot
    ``slot``. Input that does not parse, or that the slot's validation rejects, is re-prompted
    with ``reprompt`` (``{reason}`` says why) up to ``retries`` times before ``no_match`` is sent;
    silence for ``no_input_s`` after the prompt has played is re-prompted with ``no_input_prompt``
    up to ``retries`` times before ``no_input`` is sent. A list of reprompts escalates: the n-th
    retry uses the n-th text (the last one repeats).

    Entering the state again clears ``slot`` back to its default first, so a call that gives up
    after "start again" does not report the answer from before; ``keep_slot=True`` keeps it.
    """

    kind = "ask"
    waits_for = (FILLED, NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR, DISCONNECTED)
    default_exits: ClassVar[dict[str, str]] = {TTS_ERROR: FAILED, STT_ERROR: FAILED}
    quiet_events = frozenset({NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR})
    aborting_events = frozenset({TTS_ERROR, STT_ERROR})

    def __init__(
        self,
        prompt: str,
        *,
        slot: str | None = None,
        expect: Expectation | None = None,
        no_input_s: float = 6.0,
        retries: int = 2,
        reprompt: str | Sequence[str] | None = None,
        no_input_prompt: str | Sequence[str] | None = None,
        barge_in: bool = True,
        keypad: bool = True,
        keep_slot: bool = False,
        name: str = "",
        initial: bool = False,
        enter: Any = None,
        exit: Any = None,
    ) -> None:
        super().__init__(prompt, name=name, initial=initial, barge_in=barge_in, enter=enter, exit=exit)
        self.slot = slot
        self.expect = expect
        self.no_input_s = no_input_s
        self.retries = retries
        self.reprompts = ladder(reprompt) or (f"{DEFAULT_NO_MATCH_PREFIX} {prompt}",)
        self.no_input_prompts = ladder(no_input_prompt) or (f"{DEFAULT_NO_INPUT_PREFIX} {prompt}",)
        self.keypad = keypad
        self.keep_slot = keep_slot
        #: The resolved expectation (``expect``, or the slot type's); set when the flow class is built.
        self.expectation: Expectation | None = expect

    def reprompt_for(self, failure: str, attempt: int) -> str:
        """The template for retry number ``attempt`` (1-based) after ``failure`` (no_input or no_match)."""
        texts = self.no_input_prompts if failure == NO_INPUT else self.reprompts
        return texts[min(attempt, len(texts)) - 1]

    # -- validate ------------------------------------------------------------------------------

    def templates(self) -> dict[str, str]:
        found = super().templates()
        for label, texts in (("reprompt", self.reprompts), ("no_input_prompt", self.no_input_prompts)):
            for number, text in enumerate(texts, 1):
                found[f"{label} {number}" if len(texts) > 1 else label] = text
        return found

    def argument_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.prompt:
            problems.append(("has an empty prompt", "say what the caller should answer"))
        if self.slot is None and self.expect is None:
            problems.append(
                ("does not say what it expects", "give it slot='<a field of slots_model>' or expect=YesNo()")
            )
        if not self.no_input_s > 0:
            problems.append(
                (f"has no_input_s={self.no_input_s!r}", "use a positive number of seconds, e.g. 6")
            )
        if not isinstance(self.retries, int) or self.retries < 0:
            problems.append((f"has retries={self.retries!r}", "use a whole number, 0 or more, e.g. 2"))
        return problems

    def flow_problems(self, flow: Any) -> list[tuple[str, str]]:
        from voicefsm.flow.checks import did_you_mean, listing

        problems: list[tuple[str, str]] = []
        model = flow.slots_model
        model_problem = slots_model_problem(model)
        names = () if model_problem else slot_names(model)
        if self.slot is not None and not model_problem and self.slot not in names:
            problems.append(
                (
                    f"listens for slot {self.slot!r}, which {model.__name__} does not have "
                    f"({listing(names) or 'it has no fields'})",
                    did_you_mean(self.slot, names) or f"add a `{self.slot}` field to {model.__name__}",
                )
            )
        if flow.uses_stt is False and not self.keypad:
            problems.append(
                (
                    "can never hear an answer: the flow runs without speech recognition "
                    "(uses_stt = False) and keypad=False",
                    "allow the keypad, or drop uses_stt = False",
                )
            )
        return problems

    def resolve(self, flow: Any) -> list[str]:
        from voicefsm.flow.expect import UnsupportedSlotTypeError, expectation_for_field

        model = flow.slots_model
        if self.expect is not None or self.slot is None:
            return []
        if self.slot not in getattr(model, "model_fields", {}):
            return []  # reported by the checks, with the names that do exist
        try:
            self.expectation = expectation_for_field(model, self.slot)
        except UnsupportedSlotTypeError as exc:
            return [f"cannot listen for slot {self.slot!r}: {exc}"]
        return []

    def spec_fields(self) -> dict[str, Any]:
        fields = super().spec_fields()
        expectation = self.expectation
        expect = None
        if expectation is not None:
            spec = expectation.to_spec()
            keypad = expectation.keypad()
            expect = {
                "kind": str(spec.pop("kind", expectation.kind)),
                "describe": expectation.describe(),
                "params": spec,
                "keypad_max_digits": keypad.max_digits,
                "keypad_terminator": keypad.terminator,
            }
        fields.update(
            slot=self.slot,
            expect=expect,
            no_input_s=self.no_input_s,
            retries=self.retries,
            reprompts=list(self.reprompts),
            no_input_prompts=list(self.no_input_prompts),
            keypad=self.keypad,
        )
        return fields

    def examples(self) -> list[str]:
        """What a caller might do here (fault runs): each example answer and keypad input, a wrong one."""
        expectation = self.expectation
        if expectation is None:
            return []
        wrong = [text for text in expectation.counter_examples() if text.strip()][:1]
        keys = ["#" + keys for keys in expectation.dtmf_examples()]
        return list(dict.fromkeys([*expectation.examples(), *keys, *wrong]))

    # -- run -----------------------------------------------------------------------------------

    def activity(self, host: ActivityHost) -> Activity:
        return AskActivity(self, host)


class AskActivity(PromptActivity):
    """Speak, listen, collect keys, retry; send filled / no_input / no_match."""

    state: Ask
    #: While the prompt plays and the caller answers, the prompt after ``filled`` is synthesized
    #: when it does not depend on the answer; the caller's words cancel it if it is still running.
    then = FILLED

    def __init__(self, state: Ask, host: ActivityHost) -> None:
        super().__init__(state, host)
        self.failures: dict[str, int] = {}
        self.digits = ""
        self.keys_started: float | None = None

    async def enter(self) -> None:
        if self.state.slot is not None and not self.state.keep_slot:
            self._clear_slot(self.state.slot)
        if self.host.stt_failed is not None:
            await self.host.send(STT_ERROR, reason=self.host.stt_failed)
            return
        try:
            text = self.host.render(self.state.prompt or "")
        except TemplateError as exc:
            await self.host.send(ERROR_EXECUTION, error=exc)
            return
        if self.state.expectation is not None:
            self.host.set_hints(self.state.expectation)
        if text:
            self.start_prompt(text)
        else:
            self.listen()

    def _clear_slot(self, slot: str) -> None:
        """Put ``slot`` back to its default: this state asks for it afresh."""
        slots = self.host.flow.slots
        field = type(slots).model_fields.get(slot)
        if field is not None:
            setattr(slots, slot, field.get_default(call_default_factory=True))

    async def prompt_done(self, *, interrupted: bool) -> None:
        self.listen()

    async def interrupted(self) -> bool:
        self.listen()
        return True

    def listen(self) -> None:
        """Start listening: the no-input timer runs from now."""
        self.phase = "listening"
        self.arm(NO_INPUT, self.state.no_input_s)
        self.host.notify("on_listen", self.state.id)

    async def handle(self, message: Message) -> None:
        if isinstance(message, CallerKey) or (isinstance(message, CallerSaid) and message.text.strip()):
            await self.host.cancel_ahead()  # what the caller says may change the path
        if isinstance(message, PromptEnded):
            if self.claim(message, "prompt"):
                await self.prompt_ended(message)
        elif isinstance(message, TimerFired):
            if self.claim(message, "timer"):
                await self.timer_fired(message.kind)
        elif isinstance(message, SttFailed):
            await self.host.send(STT_ERROR, reason=message.reason)
        elif isinstance(message, CallerSpeaking):
            if await self.barge_in() and not self.digits:
                self.arm(NO_INPUT, self.state.no_input_s)  # the caller is talking: not silent
            await self.host.cancel_ahead()  # after the barge-in, so the prompt stops first
        elif isinstance(message, CallerSaid):
            await self.heard(message.text, message.via)
        elif isinstance(message, CallerKey):
            await self.key(message.digit)

    async def heard(self, text: str, via: str = "speech") -> None:
        """The caller said ``text`` (the runtime has recorded the turn)."""
        if not text.strip():  # noise the recognizer gave up on: not an answer, but not silence either
            if self.phase == "listening" and not self.digits:
                self.arm(NO_INPUT, self.state.no_input_s)
            return
        if not await self.barge_in() or self.digits:
            return
        self.disarm()
        assert self.state.expectation is not None
        parsed = self.state.expectation.parse_text(text, today=self.host.today())
        await self.answer(parsed, via)

    async def key(self, digit: str) -> None:
        """The caller pressed ``digit``."""
        if not self.state.keypad or not await self.barge_in():
            return
        assert self.state.expectation is not None
        keypad = self.state.expectation.keypad()
        if not self.digits:
            self.keys_started = self.host.elapsed()
        self.digits += digit
        typed = self.digits
        if keypad.terminator and typed.endswith(keypad.terminator):
            typed = typed[: -len(keypad.terminator)]
        ended = bool(keypad.terminator) and digit == keypad.terminator
        if ended or keypad.max_digits <= 1 or len(typed) >= keypad.max_digits:
            await self.keys_done()
        else:
            self.arm("inter_digit", self.host.limits.inter_digit_s)

    async def keys_done(self) -> None:
        """Keypad entry ended: parse what was typed."""
        digits, self.digits = self.digits, ""
        self.disarm()
        now = self.host.elapsed()
        self.host.caller_turn(digits, self.keys_started or now, "dtmf", self.state.id)
        assert self.state.expectation is not None
        await self.answer(self.state.expectation.parse_dtmf(digits, today=self.host.today()), "dtmf")

    async def timer_fired(self, kind: str) -> None:
        """The inter-digit pause or the no-input timer ran out."""
        if kind == "inter_digit":
            await self.keys_done()
        elif kind == NO_INPUT and self.phase == "listening":
            self.host.caller_quiet()
            await self.retry(NO_INPUT, NOTHING_HEARD)

    async def answer(self, parsed: Any, via: str) -> None:
        """A parsed answer: fill the slot and send filled, or retry."""
        if isinstance(parsed, NoMatch):
            await self.retry(NO_MATCH, parsed.reason, parsed.text)
            return
        value = parsed.value
        slot = self.state.slot
        if slot is not None:
            try:
                value = assign_slot(self.host.flow.slots, slot, value)
            except SlotRejected as exc:
                await self.retry(NO_MATCH, exc.reason, parsed.text)
                return
            self.host.notify("on_slot", slot, value)
        self.host.set_builtin("reason", "")
        self.host.speak_ahead(FILLED)  # its slots are filled now: synthesis runs while the chart moves
        await self.host.send(FILLED, value=value, slot=slot, text=parsed.text, via=via)

    async def retry(self, failure: str, reason: str, text: str = "") -> None:
        """Re-prompt after ``failure``, or send it once the retries are used up."""
        self.host.set_builtin("reason", reason)
        count = self.failures[failure] = self.failures.get(failure, 0) + 1
        if count > self.state.retries:
            payload = {"reason": reason, "text": text} if failure == NO_MATCH else {"reason": reason}
            await self.host.send(failure, **payload)
            return
        try:
            prompt = self.host.render(self.state.reprompt_for(failure, count))
        except TemplateError as exc:
            await self.host.send(ERROR_EXECUTION, error=exc)
            return
        if prompt:
            self.start_prompt(prompt)
        else:
            self.listen()
