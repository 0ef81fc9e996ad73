"""The kinds of state a voice flow is made of: states that speak, listen, and end the call.

Each kind is a python-statemachine ``State`` carrying voice metadata; the flow runtime
does the talking and listening, the chart only decides where to go next. Which events a
kind can receive (and so must handle) is fixed by the kind:

========  ===========================================================================
Say       spoken, tts_error, disconnected
Ask       filled, no_input, no_match, tts_error, stt_error, disconnected
State     (a plain decision state) an eventless transition, taken at once
endings   Hangup, Transfer, SendSms, Echo: final; the runtime speaks, acts, hangs up
========  ===========================================================================

``error.execution`` (an exception in flow code) can reach every state that is not final.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from statemachine import State

if TYPE_CHECKING:
    from voicefsm.flow.expect import Expectation

SPOKEN = "spoken"
FILLED = "filled"
NO_INPUT = "no_input"
NO_MATCH = "no_match"
TTS_ERROR = "tts_error"
STT_ERROR = "stt_error"
DISCONNECTED = "disconnected"
ERROR_EXECUTION = "error.execution"

#: Every event the runtime sends to a chart.
RUNTIME_EVENTS: tuple[str, ...] = (
    SPOKEN, FILLED, NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR, DISCONNECTED, ERROR_EXECUTION,
)  # fmt: skip
#: Events that mean something went wrong rather than that the conversation moved on.
FAILURE_EVENTS: frozenset[str] = frozenset({NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR, ERROR_EXECUTION})

DEFAULT_NO_MATCH_PREFIX = "Sorry, {reason}."
DEFAULT_NO_INPUT_PREFIX = "Sorry, I didn't hear anything."


def _declared_at() -> tuple[str, int]:
    """The file and line of the flow code that created a state (outside this module)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


def _ladder(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


class VoiceState(State):
    """A state with voice behaviour. ``prompt`` is a template over slots and built-ins."""

    kind: ClassVar[str] = "state"
    #: The events this kind can receive and so must handle (error.execution is covered for all).
    waits_for: ClassVar[tuple[str, ...]] = ()

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
        self.path, self.line = _declared_at()

    def templates(self) -> dict[str, str]:
        """Every template of this state by what it is (``prompt``, ``reprompt 1``, ``sms body``...)."""
        return {"prompt": self.prompt} if self.prompt else {}

    def argument_problems(self) -> list[tuple[str, str]]:
        """Problems with this state's own arguments, as (message, fix) pairs."""
        return []


class Say(VoiceState):
    """Speak ``prompt``, then move on with ``spoken`` (or ``tts_error``)."""

    kind = "say"
    waits_for = (SPOKEN, TTS_ERROR, DISCONNECTED)

    def __init__(
        self,
        prompt: str,
        *,
        name: str = "",
        initial: bool = False,
        barge_in: bool = True,
        enter: Any = None,
        exit: Any = None,
    ) -> None:
        super().__init__(prompt, name=name, initial=initial, barge_in=barge_in, enter=enter, exit=exit)

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.prompt:
            return [("has an empty prompt", "give Say something to say, or use a plain State()")]
        return []


class Ask(VoiceState):
    """Speak ``prompt``, then listen for speech or keys until one of filled / no_input / no_match.

    What is accepted comes from ``expect`` or, when it is not given, from the type of the slot
    ``slot``. Input that does not parse, or that the slot's validation rejects, is re-prompted
    with ``reprompt`` (``{reason}`` says why) up to ``retries`` times before ``no_match`` is sent;
    silence for ``no_input_s`` after the prompt has played is re-prompted with ``no_input_prompt``
    up to ``retries`` times before ``no_input`` is sent. A list of reprompts escalates: the n-th
    retry uses the n-th text (the last one repeats).
    """

    kind = "ask"
    waits_for = (FILLED, NO_INPUT, NO_MATCH, TTS_ERROR, STT_ERROR, DISCONNECTED)

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
        self.reprompts = _ladder(reprompt) or (f"{DEFAULT_NO_MATCH_PREFIX} {prompt}",)
        self.no_input_prompts = _ladder(no_input_prompt) or (f"{DEFAULT_NO_INPUT_PREFIX} {prompt}",)
        self.keypad = keypad
        #: The resolved expectation (``expect``, or the slot type's); set when the flow class is built.
        self.expectation: Expectation | None = expect

    def reprompt_for(self, failure: str, attempt: int) -> str:
        """The template for retry number ``attempt`` (1-based) after ``failure`` (no_input or no_match)."""
        ladder = self.no_input_prompts if failure == NO_INPUT else self.reprompts
        return ladder[min(attempt, len(ladder)) - 1]

    def templates(self) -> dict[str, str]:
        found = super().templates()
        for label, ladder in (("reprompt", self.reprompts), ("no_input_prompt", self.no_input_prompts)):
            for number, text in enumerate(ladder, 1):
                found[f"{label} {number}" if len(ladder) > 1 else label] = text
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


class Ending(VoiceState):
    """A final state: the runtime says ``prompt`` (if any), does the action, and hangs up.

    ``outcome`` is what the call record says about a call that ended here.
    """

    kind = "ending"
    default_outcome: ClassVar[str] = "completed"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, name=name, final=True, barge_in=False, enter=enter)
        self.outcome = outcome or self.default_outcome


class Hangup(Ending):
    """Say goodbye (``prompt``, optional) and hang up."""

    kind = "hangup"


class Transfer(Ending):
    """Say ``prompt`` (optional) and transfer the call to ``number`` (a template, e.g. ``"{agent}"``)."""

    kind = "transfer"
    default_outcome = "transferred"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        number: str,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.number = number

    def templates(self) -> dict[str, str]:
        return {**super().templates(), "number": self.number}

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.number:
            return [("has no number to transfer to", 'give it number="+15551234567"')]
        return []


class SendSms(Ending):
    """Say ``prompt`` (optional), text ``body`` (a template) to ``to`` (default: the caller), hang up."""

    kind = "send_sms"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        body: str,
        to: str | None = None,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.body = body
        self.recipient = to  # not `to`: State.to builds transitions

    def templates(self) -> dict[str, str]:
        found = {**super().templates(), "sms body": self.body}
        if self.recipient:
            found["sms to"] = self.recipient
        return found

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.body:
            return [("has an empty SMS body", 'give it body="Your booking: {day}"')]
        return []


class Echo(Ending):
    """Say ``prompt`` (optional), then send every caller frame straight back until hang-up or ``max_s``.

    The caller's audio must reach the runtime, so a flow with an Echo state runs without
    speech recognition (``uses_stt = False``).
    """

    kind = "echo"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        max_s: float = 600.0,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.max_s = max_s

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.max_s > 0:
            return [(f"has max_s={self.max_s!r}", "use a positive number of seconds, e.g. 600")]
        return []


def kind_of(state: State) -> str:
    """The voice kind of any state: ``say``, ``ask``, ``hangup``..., ``state`` or ``final``."""
    if isinstance(state, VoiceState):
        return state.kind
    return "final" if state.final else "state"


def events_received(state: State) -> tuple[str, ...]:
    """Every event the runtime can send while in ``state``."""
    if state.final:
        return ()
    own = state.waits_for if isinstance(state, VoiceState) else (DISCONNECTED,)
    return (*own, ERROR_EXECUTION)
