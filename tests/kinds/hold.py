"""A state kind defined outside voicefsm: ``Hold`` plays a short hold message, waits, and moves on.

It uses only the public seam (:class:`voicefsm.flow.StateKind` and its activity), as a user's
own kind would. ``HoldLine`` is a flow that uses it; the tests validate, draw, chat with, test
and fault-run it without touching voicefsm's code.
"""

from __future__ import annotations

from typing import Any

from voicefsm.flow import Ask, Hangup, Say, StateKind, VoiceFlow, YesNo
from voicefsm.flow.kinds import Activity, ActivityHost, CallerKey, Message, PromptEnded, TimerFired

WAITED = "waited"
SKIPPED = "skipped"


class HoldActivity(Activity):
    """Say the hold message, then wait ``seconds`` on the runtime's clock; the caller may press # to skip."""

    state: Hold

    async def enter(self) -> None:
        text = self.host.render(self.state.prompt or "")
        if text:
            self.spawn("prompt", lambda token: self.host.speak(token, text, self.state.id))
        self.arm(WAITED, self.state.seconds)

    async def handle(self, message: Message) -> None:
        if isinstance(message, TimerFired) and self.claim(message, "timer"):
            await self.host.send(WAITED, seconds=self.state.seconds)
        elif isinstance(message, PromptEnded) and self.claim(message, "prompt"):
            self.host.notify("on_listen", self.state.id)  # the caller may press # from now on
        elif isinstance(message, CallerKey) and message.digit == "#":
            await self.host.send(SKIPPED)


class Hold(StateKind):
    """Say ``prompt`` and wait ``seconds``: ``waited`` then, or ``skipped`` when the caller presses #."""

    kind = "hold"
    waits_for = (WAITED, SKIPPED, "disconnected")
    quiet_events = frozenset({WAITED})
    fault_attacks = ("disconnected",)
    graph_shape = "shape=octagon"

    def __init__(self, prompt: str, *, seconds: float = 3.0, name: str = "", initial: bool = False) -> None:
        super().__init__(prompt, name=name, initial=initial, barge_in=False)
        self.seconds = seconds

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.seconds > 0:
            return [(f"has seconds={self.seconds!r}", "hold for a positive number of seconds, e.g. 3")]
        return []

    def spec_fields(self) -> dict[str, Any]:
        return {**super().spec_fields(), "seconds": self.seconds}

    def activity(self, host: ActivityHost) -> Activity:
        return HoldActivity(self, host)


class HoldLine(VoiceFlow):
    """Greets, holds, asks one question."""

    greet = Say("Thanks for calling.", initial=True)
    hold = Hold("Please hold.", seconds=4.0)
    confirm = Ask("Still there? Say yes or no.", expect=YesNo())
    bye = Hangup("Goodbye!")
    spoken = greet.to(hold)
    waited = hold.to(confirm)
    skipped = hold.to(confirm)
    filled = confirm.to(bye)
    no_input = confirm.to(bye)
    no_match = confirm.to(bye)
