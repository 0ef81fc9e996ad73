"""What the person at the keyboard types, and how it is read: one line per caller action.

A plain line is what the caller says; ``/1`` or ``/123#`` press keys, ``/silence`` lets the
flow's pending timer (no input, keypad pause) run out at once, ``/hangup`` or the end of input
hangs up. :class:`StdinLines` reads a tty, a pipe or a file without blocking the loop.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import threading
from dataclasses import dataclass

from voicefsm.core.events import KEYPAD_DIGITS

HELP = (
    "Type what the caller says, then Enter. Commands:\n"
    "  /1  /123#   press keys (0-9 * # A-D)\n"
    "  /silence    say nothing: the question's no-input timer (or the keypad pause) runs out now\n"
    "  /hangup     hang up (so does the end of input, Ctrl-D)\n"
    "  /machine    a machine answered: answering-machine detection says machine_end_beep now\n"
    "              (or /machine VERDICT: human, machine_end_silence, fax...)\n"
    "  /help       this help"
)


@dataclass(frozen=True, slots=True)
class Speech:
    """The caller says ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class Keys:
    """The caller presses ``digits``, one after the other."""

    digits: str


@dataclass(frozen=True, slots=True)
class Silence:
    """The caller says nothing, for as long as the flow is willing to wait."""


@dataclass(frozen=True, slots=True)
class Leave:
    """The caller hangs up; ``reason`` says how."""

    reason: str = "caller hung up"


#: What ``/machine`` alone says: a machine whose greeting ended with a beep.
MACHINE_VERDICT = "machine_end_beep"


@dataclass(frozen=True, slots=True)
class Machine:
    """Answering-machine detection answers now with ``answered_by`` (Twilio's AnsweredBy)."""

    answered_by: str = MACHINE_VERDICT


@dataclass(frozen=True, slots=True)
class Help:
    """The caller asks how to use the terminal."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line starting with ``/`` that is no command; ``problem`` says what to type instead."""

    line: str
    problem: str


CallerInput = Speech | Keys | Silence | Leave | Machine | Help | Invalid


def parse_input(line: str) -> CallerInput | None:
    """What a typed line means; None for a blank line (nothing happens)."""
    text = line.strip()
    if not text:
        return None
    if not text.startswith("/"):
        return Speech(text)
    command = text[1:].strip()
    named: dict[str, CallerInput] = {"silence": Silence(), "hangup": Leave(), "help": Help(), "?": Help()}
    if command.lower() in named:
        return named[command.lower()]
    if command and set(command) <= KEYPAD_DIGITS:
        return Keys(command)
    word, _, verdict = command.partition(" ")
    if word.lower() == "machine":
        verdict = verdict.strip().lower() or MACHINE_VERDICT
        if re.fullmatch(r"[a-z_]{1,32}", verdict):
            return Machine(verdict)
        return Invalid(text, "a verdict is a word such as machine_end_beep, human or fax")
    return Invalid(
        text, "not a command: press keys with /1 or /123#, or type /silence, /hangup, /machine or /help"
    )


class StdinLines:
    """Lines of a file descriptor (stdin by default) as an async iterator; works on a tty, a pipe or a file.

    A blocking read cannot be cancelled, so it runs in a daemon thread: when the call ends
    first, the process exits without waiting for the keyboard. ``os.read`` holds no Python
    I/O lock, so that thread cannot trouble the interpreter's shutdown either.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._queue: asyncio.Queue[str | None] | None = None
        self._done = False

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        if self._queue is None:
            self._queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            threading.Thread(target=self._pump, args=(loop, self._queue), daemon=True, name="stdin").start()
        if self._done:
            raise StopAsyncIteration
        line = await self._queue.get()
        if line is None:
            self._done = True
            raise StopAsyncIteration
        return line

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""

        def hand_over(line: str | None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                return False
            return True

        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                if not hand_over(line.removesuffix("\r")):
                    return
            if not chunk:
                if pending:
                    hand_over(pending)
                hand_over(None)
                return
