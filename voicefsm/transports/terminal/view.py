"""What the terminal shows of a call: agent prompts, the caller's input, state changes, slots, actions.

The view has the hooks of the runtime's ``FlowListener`` (this module sits below the runtime,
so it matches them by shape). Text is never read as rich markup.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from typing import Protocol

from rich.console import Console
from rich.text import Text

from voicefsm.core.actions import OutboundCall
from voicefsm.errors import TelephonyError
from voicefsm.transports.terminal.keyboard import CallerInput, Keys, Leave, Machine, Silence, Speech


class TurnLike(Protocol):
    """The parts of the runtime's ``Turn`` the view shows."""

    @property
    def speaker(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def interrupted(self) -> bool: ...


def show_value(value: object) -> str:
    """A slot value as a person reads it: dates ISO, times HH:MM, the rest as ``str``."""
    if isinstance(value, dt.time) and not (value.second or value.microsecond):
        return value.strftime("%H:%M")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class TerminalView:
    """Prints the call: agent prompts, the caller's input, state changes, slots, actions and errors.

    It has the hooks of the runtime's ``FlowListener``. With ``interactive`` the person at the
    keyboard sees what they typed already, so caller lines are not printed again and a
    ``caller>`` prompt marks when an answer is awaited. Text is never read as rich markup.
    """

    def __init__(self, console: Console, *, interactive: bool = False) -> None:
        self.console = console
        self.interactive = interactive

    def _print(self, *parts: str | tuple[str, str]) -> None:
        self.console.print(Text.assemble(*parts), soft_wrap=True)

    # FlowListener hooks

    def on_transition(self, source: str, event: str, target: str) -> None:
        """The chart moved: ``-> target (event)``."""
        self._print(("  -> ", "dim"), (target, "bold blue"), (f" ({event})", "dim"))

    def on_turn(self, turn: TurnLike) -> None:
        """An agent prompt ended (caller input is shown as it is typed, by :meth:`caller`)."""
        if turn.speaker != "agent":
            return
        cut = (" (interrupted)", "yellow") if turn.interrupted else ""
        self._print(("agent: ", "bold cyan"), turn.text, cut)

    def on_listen(self, state: str) -> None:
        """The flow waits for an answer; the prompt is shown when the line reads the keyboard."""

    def on_slot(self, name: str, value: object) -> None:
        """A slot was filled."""
        self._print(("  = ", "green"), (name, "green"), ": ", show_value(value))

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Something failed on the call (an ``amd`` note is not a failure: it is shown as news)."""
        if kind == "amd":
            self._print(("  ~ ", "bold cyan"), message)
            return
        self._print(("  ! ", "bold red"), (f"{kind}: ", "red"), message)

    # the line's own notices

    def caller(self, typed: CallerInput) -> None:
        """What the caller did, unless the person at the keyboard can see it already."""
        if self.interactive:
            return
        if isinstance(typed, Speech):
            self._print(("caller: ", "bold magenta"), typed.text)
        elif isinstance(typed, Keys):
            self._print(("caller: ", "bold magenta"), (f"[presses {typed.digits}]", "magenta"))
        elif isinstance(typed, Silence):
            self._print(("caller: ", "bold magenta"), ("[silence]", "magenta"))
        elif isinstance(typed, Leave):
            self._print(("caller: ", "bold magenta"), (f"[{typed.reason}]", "magenta"))
        elif isinstance(typed, Machine):
            self._print(("caller: ", "bold magenta"), (f"[a machine: {typed.answered_by}]", "magenta"))

    def action(self, description: str) -> None:
        """The flow asked the phone network for something (a transfer, a text message)."""
        self._print(("  * ", "bold yellow"), description)

    def note(self, message: str) -> None:
        """A remark of the terminal itself (help, a typo, nothing to wait for)."""
        self._print((message, "dim"))

    def prompt(self) -> None:
        """Show that the caller's answer is awaited (interactive only)."""
        if self.interactive:
            self.console.print(Text("caller> ", style="bold magenta"), end="")
            self.console.file.flush()

    def summary(
        self, *, outcome: str, final_state: str | None, slots: Mapping[str, object], ended_by: str | None
    ) -> None:
        """How the call ended and what it collected."""
        where = f" in {final_state}" if final_state else ""
        how = f"; {ended_by}" if ended_by else ""
        self._print(("call ended: ", "bold"), (outcome, "bold"), where, how)
        filled = {name: value for name, value in slots.items() if value is not None}
        if filled:
            self._print("slots: ", ", ".join(f"{name}={show_value(value)}" for name, value in filled.items()))


class TerminalActions:
    """Telephony actions for the terminal: transfers and text messages are shown, never sent."""

    def __init__(self, view: TerminalView) -> None:
        self.view = view
        self._ids = itertools.count(1)

    async def place_call(
        self, to: str, twiml: str, *, status_callback: str | None = None, machine_detection: bool = False
    ) -> OutboundCall:
        """A chat has no phone network to dial out on."""
        raise TelephonyError("place_call", "a terminal chat cannot place calls; use `voicefsm call`")

    async def transfer(self, call_sid: str, number: str, *, say: str | None = None) -> None:
        """Show the transfer."""
        if not number:
            raise TelephonyError("transfer", "no number to transfer the call to")
        self.view.action(f"transfer to {number}")

    async def hangup(self, call_sid: str) -> None:
        """Nothing to do: the line itself ends the call."""

    async def send_sms(self, to: str, body: str) -> str:
        """Show the text message; returns a made-up message sid."""
        if not body:
            raise TelephonyError("send_sms", "the message body is empty")
        self.view.action(f"text to {to}: {body}")
        return f"SM{next(self._ids):032x}"
