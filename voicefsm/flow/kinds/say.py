"""``Say``: speak a prompt, then move on with ``spoken`` (or ``tts_error``).

Its activity is also the base of Ask's: it speaks the prompt as a task and handles barge-in.
While an interruptible prompt plays, the caller's first interim transcript (or a key) stops it
and clears the line's buffer; a Say then moves on with ``spoken(interrupted=True)``. Every
prompt ends in exactly one of spoken / tts_error / disconnected.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from voicefsm.flow.errors import TemplateError
from voicefsm.flow.kinds.base import (
    DISCONNECTED,
    ERROR_EXECUTION,
    FAILED,
    SPOKEN,
    TTS_ERROR,
    Activity,
    ActivityHost,
    CallerKey,
    CallerSaid,
    CallerSpeaking,
    Message,
    PromptEnded,
    StateKind,
)

Phase = Literal["idle", "prompting", "listening"]


class PromptActivity(Activity):
    """A state that speaks a prompt: Say's activity, and the base of Ask's."""

    state: StateKind

    #: The event sent once the prompt has played: the prompt it leads to is synthesized meanwhile.
    then: str | None = SPOKEN

    def __init__(self, state: StateKind, host: ActivityHost) -> None:
        super().__init__(state, host)
        self.phase: Phase = "idle"

    async def enter(self) -> None:
        try:
            text = self.host.render(self.state.prompt or "")
        except TemplateError as exc:
            await self.host.send(ERROR_EXECUTION, error=exc)
            return
        if text:
            self.start_prompt(text)
        else:
            await self.prompt_done(interrupted=False)

    def start_prompt(self, text: str) -> None:
        """Speak ``text`` as the state's prompt task."""
        self.phase = "prompting"
        self.spawn("prompt", lambda token: self.host.speak(token, text, self.state.id, then=self.then))

    async def prompt_done(self, *, interrupted: bool) -> None:
        """The prompt has played (or was talked over): a Say moves on."""
        self.phase = "idle"
        await self.host.send(SPOKEN, interrupted=interrupted)

    async def handle(self, message: Message) -> None:
        if isinstance(message, PromptEnded):
            if self.claim(message, "prompt"):
                await self.prompt_ended(message)
        elif isinstance(message, CallerSpeaking | CallerKey) or (
            isinstance(message, CallerSaid) and message.text.strip()
        ):
            await self.barge_in()

    async def prompt_ended(self, message: PromptEnded) -> None:
        """The prompt task ended: failed (tts_error), cut by a hang-up, or played."""
        if message.error is not None:
            self.host.fail("tts", f"could not speak in {self.state.id}: {message.error}")
            await self.host.send(TTS_ERROR, reason=message.error)
        elif message.disconnected:
            self.phase = "idle"  # the Disconnected event is on its way
        else:
            await self.prompt_done(interrupted=message.interrupted)

    async def barge_in(self) -> bool:
        """Stop an interruptible prompt; True when the caller may now be heard."""
        if self.phase != "prompting":
            return self.phase == "listening"
        if not self.state.barge_in:
            return False
        await self.cancel("prompt")
        return await self.interrupted()

    async def interrupted(self) -> bool:
        """The caller talked over the prompt and it stopped: a Say moves on."""
        await self.prompt_done(interrupted=True)
        return False

    async def stop(self, *, hung_up: bool = False) -> None:
        self.phase = "idle"
        await super().stop(hung_up=hung_up)


class Say(StateKind):
    """Speak ``prompt``, then move on with ``spoken`` (or ``tts_error``)."""

    kind = "say"
    waits_for = (SPOKEN, TTS_ERROR, DISCONNECTED)
    default_exits: ClassVar[dict[str, str]] = {TTS_ERROR: FAILED}
    quiet_events = frozenset({SPOKEN, TTS_ERROR})
    aborting_events = frozenset({TTS_ERROR})

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

    def activity(self, host: ActivityHost) -> Activity:
        return PromptActivity(self, host)
