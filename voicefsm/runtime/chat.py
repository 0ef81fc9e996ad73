"""A call whose caller is the keyboard and whose phone is the screen: the engine of ``voicefsm chat``.

The call runs through the one driver (:func:`~voicefsm.runtime.driver.run_call`) over an
in-process far end, on a :class:`~voicefsm.runtime.clock.ManualClock`: time moves only when
the agent talks (the driver's playout moves it by the length of the audio) or when the caller
types ``/silence``, so a script piped in gets the same transcript on every run. There is no
audio and no recognizer: typed lines reach the call as final transcripts.

The next line is read only once the flow waits for the caller: it listens again, or it has
ended. Keys that do not finish an entry leave the flow listening where it was, and an echo
waits for audio without listening; then the line is read once the loop has settled with
nothing done meanwhile. So answers never race the flow, even when its code awaits something
slow (an awaited lookup is not a settled loop: its slot was filled, or its state moved on).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence

from voicefsm.core.events import CallStarted, Committed, MachineDetected
from voicefsm.core.intents import OutboundItem
from voicefsm.errors import VoiceFsmError
from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.spec import FlowSpec
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import ManualClock
from voicefsm.runtime.driver import CallLimits, run_call
from voicefsm.runtime.flow_runtime import FlowListener, FlowResult, Turn
from voicefsm.runtime.session import CallSession, FlowRun
from voicefsm.transports.memory import MemoryFarEnd
from voicefsm.transports.terminal import (
    HELP,
    CallerInput,
    Help,
    Invalid,
    Keys,
    Leave,
    Machine,
    Silence,
    Speech,
    TerminalActions,
    TerminalView,
    parse_input,
)

#: The chat's made-up number and call id (555-01xx numbers are reserved for fiction).
CHAT_CALLER = "+15555550100"
CHAT_CALL_ID = "CA" + "0" * 28 + "c4a7"
#: The chat's driver: its far end sends no audio, so it never idles out.
CHAT_LIMITS = CallLimits(idle_timeout_s=None)


class ChatStuckError(VoiceFsmError):
    """The flow did not end after the caller hung up; a runtime bug, reported rather than waited on."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s

    def __str__(self) -> str:
        return f"the flow did not end within {self.wait_s:g} s of the caller hanging up"


async def settled(*, idle_turns: int = 2, fallback_turns: int = 50) -> None:
    """Return once the event loop has had nothing else to run for ``idle_turns`` iterations in a row.

    Idleness is read from CPython's ready queue (as the VirtualClock does); other loops wait
    ``fallback_turns`` iterations.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    idle = 0
    while idle < (idle_turns if ready is not None else fallback_turns):
        await asyncio.sleep(0)
        idle = 0 if ready is not None and len(ready) else idle + 1


class _Progress(FlowListener):
    """Shows the flow on the view, counts its listens, moves and other doings, and wakes who waits on them."""

    def __init__(self, view: TerminalView) -> None:
        self.view = view
        self.listens = 0
        self.moves = 0
        self.doings = 0
        self.state: str | None = None
        self.listened_after = -1  # the move count at the last listen
        self.changed = asyncio.Event()

    @property
    def listening(self) -> bool:
        """The flow listens in the state it is in (no move since its last listen)."""
        return self.listened_after == self.moves

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.view.on_transition(source, event, target)
        self.moves += 1
        self.state = target
        self._did()

    def on_listen(self, state: str) -> None:
        self.view.on_listen(state)
        self.listens += 1
        self.listened_after = self.moves
        self._did()

    def on_slot(self, name: str, value: object) -> None:
        self.view.on_slot(name, value)
        self._did()

    def on_turn(self, turn: Turn) -> None:
        self.view.on_turn(turn)
        self._did()

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        self.view.on_error(kind, message, error)
        self._did()

    def _did(self) -> None:
        self.doings += 1
        self.changed.set()


class ChatLine:
    """The caller's side of a terminal call: reads lines, acts on the call, waits for the flow."""

    def __init__(
        self,
        flow: type[VoiceFlow],
        view: TerminalView,
        *,
        today: dt.date | None = None,
        listeners: Sequence[FlowListener] = (),
        resources: Mapping[str, object] | None = None,
        end_wait_s: float = 10.0,
    ) -> None:
        self.flow = flow
        self.resources = resources
        self.view = view
        self.today = today
        self.listeners = tuple(listeners)
        self.end_wait_s = end_wait_s
        self.clock = ManualClock()
        self.far_end = MemoryFarEnd(on_intent=self._shown)
        self.progress = _Progress(view)
        #: States that wait for the caller without listening for words (an echo waits for audio).
        self._waits_unheard = frozenset(
            state.id for state in FlowSpec.of(flow).states if state.kind == "echo"
        )
        self.call: Call | None = None
        self._run: FlowRun | None = None

    @staticmethod
    def _shown(item: OutboundItem) -> None:
        """The agent's audio: the driver's playout times it; the screen shows its words, not its sound."""

    @contextlib.asynccontextmanager
    async def _session(self, started: CallStarted) -> AsyncIterator[CallSession]:
        self.call = Call(call_sid=started.call_id, caller=started.caller, parameters=started.parameters)
        today = self.today
        self._run = FlowRun(
            self.call,
            self.flow,
            ScriptedTextToSpeech(),
            actions=TerminalActions(self.view),
            clock=self.clock,
            listeners=[self.progress, *self.listeners],
            today=(lambda: today) if today is not None else dt.date.today,
            resources=self.resources,
        )
        yield CallSession(self.call, self._run, self.clock)

    async def run(self, lines: AsyncIterable[str]) -> FlowResult:
        """Run the call while feeding it ``lines``; returns how the flow ended.

        Ends when the call does: after the agent hangs up, or after the caller does (``/hangup``
        or the end of ``lines``). Every task started here is awaited before returning.
        """
        self.far_end.start(CHAT_CALL_ID, CHAT_CALLER)
        call = asyncio.create_task(run_call(self.far_end, self._session, CHAT_LIMITS), name="chat-call")
        try:
            await self._converse(call, aiter(lines))
            await call
        finally:
            if not call.done():
                call.cancel()
            await asyncio.wait([call])
        run = self._run
        if run is not None and run.result is not None:
            return run.result
        if run is not None and run.error is not None and not isinstance(run.error, asyncio.CancelledError):
            raise run.error
        raise ChatStuckError(CHAT_LIMITS.handler_grace_s)  # it was cancelled at the end of its grace

    @property
    def ended_by(self) -> str | None:
        """Who ended the call, as the summary says it."""
        if self.call is None:
            return None
        return "agent hung up" if self.call.hangup_reason is not None else self.call.disconnect_reason

    async def _converse(self, call: asyncio.Task[str], lines: AsyncIterator[str]) -> None:
        await self._flow_waits(call, listens=0, doings=0, keys=False)
        while not call.done():
            self.view.prompt()
            line = await self._next_line(call, lines)
            if call.done():
                return
            typed = Leave("end of input: caller hung up") if line is None else parse_input(line)
            if typed is None:
                continue
            self.view.caller(typed)
            if isinstance(typed, Leave):
                self.far_end.hang_up(typed.reason)
                try:
                    async with asyncio.timeout(self.end_wait_s):
                        await asyncio.wait([call])
                except TimeoutError:
                    raise ChatStuckError(self.end_wait_s) from None
                return
            if isinstance(typed, Machine):  # the flow acts on it at once, or not at all
                if self.call is not None:
                    self.call.emit(MachineDetected(typed.answered_by))
                await settled()
                continue
            listens, doings = self.progress.listens, self.progress.doings
            if self._act(typed):
                await self._flow_waits(call, listens=listens, doings=doings, keys=isinstance(typed, Keys))

    def _act(self, typed: CallerInput) -> bool:
        """Do what the caller typed; True when the flow has something to answer."""
        if isinstance(typed, Speech) and self.call is not None:
            self.call.emit(Committed(typed.text, via="text"))
            return True
        if isinstance(typed, Keys):
            self.far_end.press(typed.digits)
            return True
        if isinstance(typed, Silence):
            if self.clock.skip() is not None:
                return True
            self.view.note("(nothing is waiting for time to pass)")
        elif isinstance(typed, Help):
            self.view.note(HELP)
        elif isinstance(typed, Invalid):
            self.view.note(f"{typed.line}: {typed.problem}")
        return False

    async def _flow_waits(self, call: asyncio.Task[str], *, listens: int, doings: int, keys: bool) -> None:
        """Wait until the flow waits for the caller again: it listens anew, or the call has ended.

        A flow may also wait for the caller without listening anew: keys that do not finish an
        entry leave it listening where it was, doing nothing else, and an echo waits for audio.
        Then the line is read once the loop has settled with nothing done meanwhile (only the
        keypad pause or the echo's limit is left to run out). A flow still working on an answer
        (a slot filled, a lookup awaited before it moves on) is waited for.
        """
        progress = self.progress
        while not call.done() and progress.listens == listens:
            keys_pending = keys and progress.listening and progress.doings == doings
            if keys_pending or progress.state in self._waits_unheard:
                before = progress.doings
                await settled()
                if progress.listens == listens and progress.doings == before:
                    return
                continue
            progress.changed.clear()
            changed = asyncio.create_task(progress.changed.wait(), name="chat-wait")
            try:
                await asyncio.wait([changed, call], return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                await asyncio.wait([changed])

    async def _next_line(self, call: asyncio.Task[str], lines: AsyncIterator[str]) -> str | None:
        """The next line, or None at the end of input (or when the call ended first)."""

        async def read() -> str | None:
            return await anext(lines, None)

        reader = asyncio.create_task(read(), name="chat-read")
        await asyncio.wait([reader, call], return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
            return None
        return reader.result()
