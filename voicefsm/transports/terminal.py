"""The terminal line: a call whose caller is the keyboard and whose phone is the screen (``voicefsm chat``).

No audio and no recognizer: the agent's prompts are printed as they finish playing, typed
lines reach the call as final transcripts (:class:`~voicefsm.core.events.Committed`),
``/1`` or ``/123#`` press keys, ``/silence`` lets the flow's pending timer (no input,
keypad pause) run out at once, ``/hangup`` or the end of input hangs up.

Time is simulated by :class:`TerminalClock` and moves only when the agent talks (by the
length of its audio) or when the caller stays silent, so a script piped in gets the same
transcript on every run. The line reads the next input only once the call has settled
(nothing left to do but wait for the caller), so typed answers never race the prompts.

This module sits below the runtime: it drives anything shaped like a
:class:`~voicefsm.runtime.call.Call` (:class:`LineCall`) and its view has the hooks of a
``FlowListener``; ``voicefsm.cli`` wires the two together.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime as dt
import heapq
import itertools
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.text import Text

from voicefsm.core.actions import OutboundCall
from voicefsm.core.events import CallEvent, Committed, Dtmf
from voicefsm.core.intents import ClearBuffer, OutboundItem, PlaceMark, PlayAudio
from voicefsm.errors import TelephonyError, VoiceFsmError

T = TypeVar("T")

#: The chat's made-up numbers and sids (555-01xx numbers are reserved for fiction).
CHAT_CALLER = "+15555550100"
CHAT_CALL_SID = "CA" + "0" * 28 + "c4a7"
CHAT_STREAM_SID = "MZ" + "0" * 28 + "c4a7"
ULAW_BYTES_PER_S = 8000
#: Keys a caller may press with ``/``: case-sensitive, so ``/bad`` is a typo, not three keys.
KEYS = frozenset("0123456789*#ABCD")

HELP = (
    "Type what the caller says, then Enter. Commands:\n"
    "  /1  /123#   press keys (0-9 * # A-D)\n"
    "  /silence    say nothing: the question's no-input timer (or the keypad pause) runs out now\n"
    "  /hangup     hang up (so does the end of input, Ctrl-D)\n"
    "  /help       this help"
)


# -- what the caller typed ----------------------------------------------------------------------


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
class HangUp:
    """The caller hangs up; ``reason`` says how."""

    reason: str = "caller hung up"


@dataclass(frozen=True, slots=True)
class Help:
    """The caller asks how to use the terminal."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line starting with ``/`` that is no command; ``problem`` says what to type instead."""

    line: str
    problem: str


CallerInput = Speech | Keys | Silence | HangUp | Help | Invalid


def parse_input(line: str) -> CallerInput | None:
    """What a typed line means; None for a blank line (nothing happens)."""
    text = line.strip()
    if not text:
        return None
    if not text.startswith("/"):
        return Speech(text)
    command = text[1:].strip()
    named: dict[str, CallerInput] = {"silence": Silence(), "hangup": HangUp(), "help": Help(), "?": Help()}
    if command.lower() in named:
        return named[command.lower()]
    if command and set(command) <= KEYS:
        return Keys(command)
    return Invalid(text, "not a command: press keys with /1 or /123#, or type /silence, /hangup or /help")


# -- simulated time -----------------------------------------------------------------------------

#: Shorter sleeps than this just move the clock: a deadline recomputed in floating point can land a
#: hair after the instant the clock was moved to, and must not need a second /silence.
_EPSILON_S = 1e-6


class TerminalClock:
    """Simulated time that moves only when told to: by the agent's audio, or by the caller's silence.

    It has the ``now`` / ``sleep`` of the runtime's ``Clock``. Unlike a clock that jumps when
    the loop is idle, it never moves while the line waits for the keyboard.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        """The simulated time, in seconds."""
        return self._now

    @property
    def pending(self) -> int:
        """How many sleepers are waiting."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been moved ``seconds`` on. Cancellable."""
        if seconds <= _EPSILON_S:
            self._now += max(seconds, 0.0)
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()  # stays in the heap until it reaches the top

    def advance_to(self, when: float) -> None:
        """Move the clock to ``when`` (never back) and wake every sleeper then due."""
        self._now = max(self._now, when)
        self._wake_due()

    def skip(self) -> float | None:
        """Jump to the earliest pending deadline and wake what is due; the seconds skipped, or None."""
        self._drop_cancelled()
        if not self._sleepers:
            return None
        before = self._now
        self.advance_to(self._sleepers[0][0])
        return self._now - before

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)


async def settled(*, idle_turns: int = 2, fallback_turns: int = 50) -> None:
    """Return once the event loop has had nothing else to run for ``idle_turns`` iterations in a row.

    On the terminal line everything happens on the loop and the clock moves only when told
    to, so an idle loop means the call waits for the caller. Idleness is read from CPython's
    ready queue (as the runtime's VirtualClock does); other loops wait ``fallback_turns``.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    idle = 0
    while idle < (idle_turns if ready is not None else fallback_turns):
        await asyncio.sleep(0)
        idle = 0 if ready is not None and len(ready) else idle + 1


# -- what the screen shows ----------------------------------------------------------------------


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
        """Something failed on the call."""
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
        elif isinstance(typed, HangUp):
            self._print(("caller: ", "bold magenta"), (f"[{typed.reason}]", "magenta"))

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


# -- the line -----------------------------------------------------------------------------------


class LineCall(Protocol):
    """What the terminal line needs of a call (``voicefsm.runtime.call.Call`` has all of it)."""

    hangup_requested: asyncio.Event
    hangup_reason: str | None

    def emit(self, event: CallEvent) -> None: ...
    async def next_outbound(self) -> OutboundItem | None: ...
    def mark_echoed(self, name: str) -> object: ...
    def signal_disconnected(self, reason: str) -> bool: ...


class ChatStuckError(VoiceFsmError):
    """The flow did not end after the caller hung up; a runtime bug, reported rather than waited on."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s

    def __str__(self) -> str:
        return f"the flow did not end within {self.wait_s:g} s of the caller hanging up"


class TerminalLine:
    """Plays the phone (audio played on the simulated clock, marks echoed) and the caller (the keyboard)."""

    def __init__(
        self, call: LineCall, clock: TerminalClock, view: TerminalView, *, end_wait_s: float = 10.0
    ) -> None:
        self.call = call
        self.clock = clock
        self.view = view
        self.end_wait_s = end_wait_s

    async def run(self, conversation: Coroutine[Any, Any, T], lines: AsyncIterable[str]) -> T:
        """Run ``conversation`` (the flow on this call) while feeding it ``lines``; returns its result.

        Ends when the conversation does: after the agent hangs up, or after the caller does
        (``/hangup`` or the end of ``lines``). Every task started here is awaited before returning.
        """
        flow = asyncio.create_task(conversation, name="terminal-flow")
        helpers = [
            asyncio.create_task(self._play(), name="terminal-phone"),
            asyncio.create_task(self._hangup_watch(), name="terminal-hangup"),
        ]
        try:
            await self._converse(flow, aiter(lines))
            return await flow
        finally:
            for task in (*helpers, flow):
                task.cancel()
            await asyncio.wait([*helpers, flow])

    async def _converse(self, flow: asyncio.Task[Any], lines: AsyncIterator[str]) -> None:
        while True:
            await settled()
            if flow.done():
                return
            self.view.prompt()
            line = await self._next_line(flow, lines)
            if flow.done():
                return
            typed = HangUp("end of input: caller hung up") if line is None else parse_input(line)
            if typed is None:
                continue
            self.view.caller(typed)
            if isinstance(typed, HangUp):
                self.call.signal_disconnected(typed.reason)
                try:
                    async with asyncio.timeout(self.end_wait_s):
                        await asyncio.wait([flow])
                except TimeoutError:
                    raise ChatStuckError(self.end_wait_s) from None
                return
            self._act(typed)

    async def _next_line(self, flow: asyncio.Task[Any], lines: AsyncIterator[str]) -> str | None:
        """The next line, or None at the end of input (or when the flow ended first)."""

        async def read() -> str | None:
            return await anext(lines, None)

        reader = asyncio.create_task(read(), name="terminal-read")
        await asyncio.wait([reader, flow], return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
            return None
        return reader.result()

    def _act(self, typed: CallerInput) -> None:
        if isinstance(typed, Speech):
            self.call.emit(Committed(typed.text))
        elif isinstance(typed, Keys):
            for digit in typed.digits:
                self.call.emit(Dtmf(digit))
        elif isinstance(typed, Silence):
            if self.clock.skip() is None:
                self.view.note("(nothing is waiting for time to pass)")
        elif isinstance(typed, Help):
            self.view.note(HELP)
        elif isinstance(typed, Invalid):
            self.view.note(f"{typed.line}: {typed.problem}")

    async def _play(self) -> None:
        """The phone: audio takes its length in simulated time; a mark comes back when it has played."""
        playing_until = self.clock.now()
        while (item := await self.call.next_outbound()) is not None:
            now = self.clock.now()
            if isinstance(item, PlayAudio):
                playing_until = max(playing_until, now) + len(item.ulaw) / ULAW_BYTES_PER_S
            elif isinstance(item, PlaceMark):
                self.clock.advance_to(playing_until)
                self.call.mark_echoed(item.name)
            elif isinstance(item, ClearBuffer):
                playing_until = now

    async def _hangup_watch(self) -> None:
        await self.call.hangup_requested.wait()
        self.call.signal_disconnected("agent hung up")


# -- the keyboard -------------------------------------------------------------------------------


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
