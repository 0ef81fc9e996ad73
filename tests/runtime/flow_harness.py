"""An in-process phone line for flow tests: a real Call and FlowRuntime, no socket, simulated time.

A transport task plays the far end: it "plays" outbound audio on the virtual clock (8000
mu-law bytes a second), echoes each mark once the audio before it has played, forgets audio
on a clear, and ends the call when a hang-up is requested. The caller is scripted: ``say``
goes through ScriptedSpeechToText (partials, then the final), ``press`` delivers keys.

Nothing here sleeps in real time; every wait is bounded by a real-time timeout, so a flow
that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from types import TracebackType
from typing import Any

from voicefsm.core.events import Dtmf, WsConnected
from voicefsm.core.intents import ClearBuffer, PlaceMark, PlayAudio
from voicefsm.flow.chart import VoiceFlow
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import VirtualClock
from voicefsm.runtime.flow_runtime import FlowListener, FlowResult, FlowRuntime, RuntimeLimits, Turn
from voicefsm.telephony.recording import RecordingActions

MONDAY = dt.date(2024, 6, 3)
CALLER = "+15550001234"
ULAW_BYTES_PER_S = 8000
WAIT_S = 5.0  # real seconds; simulated waits take none, so only a hang gets near this


class FlowLine(FlowListener):
    """One call to ``flow`` over an in-process line. Use as ``async with FlowLine(Booking) as line:``."""

    def __init__(
        self,
        flow: type[VoiceFlow] | VoiceFlow,
        *,
        caller: str | None = CALLER,
        today: dt.date = MONDAY,
        echo_marks: bool = True,
        limits: RuntimeLimits | None = None,
        actions: RecordingActions | None = None,
    ) -> None:
        self.flow = flow
        self.caller = caller
        self.today = today
        self.echo_marks = echo_marks
        self.limits = limits
        self.clock = VirtualClock()
        self.tts = ScriptedTextToSpeech()
        self.stt = ScriptedSpeechToText()
        self.actions = actions or RecordingActions()
        self.turns: list[Turn] = []
        self.transitions: list[tuple[str, str, str]] = []
        self.errors: list[tuple[str, str]] = []
        self.listens: list[str] = []
        self.slots_filled: list[tuple[str, object]] = []
        self.clears = 0
        self.audio_bytes = 0
        self._changed = asyncio.Event()
        self._cursor_spoken = 0
        self._cursor_turns = 0
        self._cursor_listens = 0
        self._tasks: list[asyncio.Task[Any]] = []

    # -- setup and teardown -----------------------------------------------------------------------

    async def __aenter__(self) -> FlowLine:
        self._before = asyncio.all_tasks()
        self.call = Call(call_sid="CA" + "0" * 32)
        self.call.signal_ws_connected(WsConnected(self.call.call_sid or "", "MZ" + "0" * 32, self.caller, {}))
        flow_cls = self.flow if isinstance(self.flow, type) else type(self.flow)
        if isinstance(self.flow, VoiceFlow) and self.flow.caller is None:
            self.flow.caller = self.caller
        if flow_cls.uses_stt:
            self.call.stt_factory = lambda: self.stt
            await self.call.start_stt()
        self.runtime = FlowRuntime(
            self.flow,
            self.call,
            self.tts,
            actions=self.actions,
            clock=self.clock,
            listeners=[self],
            today=lambda: self.today,
            limits=self.limits,
        )
        self._tasks = [
            asyncio.create_task(self._play(), name="line-play"),
            asyncio.create_task(self._hangup_watch(), name="line-hangup"),
        ]
        self.run_task = asyncio.create_task(self.runtime.run(), name="line-flow")
        self.run_task.add_done_callback(lambda _: self._changed.set())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [*self._tasks, self.run_task]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        await self.call.stop_stt()
        self.clock.close()
        if exc_type is None:
            left = {task.get_name() for task in asyncio.all_tasks() - self._before}
            assert not left, f"tasks left behind by the call: {sorted(left)}"

    # -- the far end ------------------------------------------------------------------------------

    async def _play(self) -> None:
        playing_until = self.clock.now()
        while (item := await self.call.next_outbound()) is not None:
            now = self.clock.now()
            if isinstance(item, PlayAudio):
                self.audio_bytes += len(item.ulaw)
                playing_until = max(playing_until, now) + len(item.ulaw) / ULAW_BYTES_PER_S
                self._changed.set()
            elif isinstance(item, PlaceMark):
                if self.echo_marks:
                    await self.clock.sleep(playing_until - now)
                    self.call.mark_echoed(item.name)
            elif isinstance(item, ClearBuffer):
                self.clears += 1
                playing_until = now

    async def _hangup_watch(self) -> None:
        await self.call.hangup_requested.wait()
        self.call.signal_disconnected(f"hangup requested ({self.call.hangup_reason})")

    # -- the caller -------------------------------------------------------------------------------

    def say(self, text: str, *, partials: bool = True) -> None:
        """The caller says ``text`` (interim hypotheses word by word, then the final)."""
        self.stt.say(text, partials=partials)

    def press(self, keys: str) -> None:
        """The caller presses ``keys``, one digit after another without a pause."""
        for key in keys:
            self.call.emit(Dtmf(key))

    def hang_up(self) -> None:
        """The caller hangs up."""
        self.call.signal_disconnected("caller hung up")

    # -- waiting ----------------------------------------------------------------------------------

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; after WAIT_S real seconds, fail naming ``what`` and the path."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"gave up waiting for {what}; path so far: {self.path}") from None

    async def speaking(self, fragment: str) -> str:
        """Wait until a prompt containing ``fragment`` is being played; returns it."""
        found: list[str] = []

        def started() -> bool:
            for index in range(self._cursor_spoken, len(self.tts.spoken)):
                if fragment.lower() in self.tts.spoken[index].lower() and self.audio_bytes:
                    self._cursor_spoken = index + 1
                    found.append(self.tts.spoken[index])
                    return True
            return False

        await self.until(started, f"the agent to start saying {fragment!r}")
        return found[0]

    async def heard(self, fragment: str) -> Turn:
        """Wait until the agent has finished a prompt containing ``fragment``; returns its turn."""
        found: list[Turn] = []

        def finished() -> bool:
            for index in range(self._cursor_turns, len(self.turns)):
                turn = self.turns[index]
                if turn.speaker == "agent" and fragment.lower() in turn.text.lower():
                    self._cursor_turns = index + 1
                    found.append(turn)
                    return True
            return False

        await self.until(finished, f"the agent to say {fragment!r}")
        return found[0]

    async def listening(self, state: str) -> None:
        """Wait until the runtime listens in ``state`` (its prompt has played)."""

        def started() -> bool:
            if state in self.listens[self._cursor_listens :]:
                self._cursor_listens = self.listens.index(state, self._cursor_listens) + 1
                return True
            return False

        await self.until(started, f"listening in {state}")

    async def ended(self) -> FlowResult:
        """Wait for the flow to finish; returns its result."""
        await self.until(self.run_task.done, "the flow to end")
        result = self.run_task.result()
        runtime_tasks = [
            task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("flow-")
        ]
        assert not runtime_tasks, f"FlowRuntime.run() returned but left {runtime_tasks} running"
        return result

    # -- what happened ----------------------------------------------------------------------------

    @property
    def path(self) -> list[str]:
        """The states entered, in order (the initial state first)."""
        return [target for _, _, target in self.transitions]

    @property
    def agent_said(self) -> list[str]:
        """Every agent prompt that was started, in order."""
        return [turn.text for turn in self.turns if turn.speaker == "agent"]

    # -- FlowListener -----------------------------------------------------------------------------

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.transitions.append((source, event, target))
        self._changed.set()

    def on_turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._changed.set()

    def on_listen(self, state: str) -> None:
        self.listens.append(state)
        self._changed.set()

    def on_slot(self, name: str, value: object) -> None:
        self.slots_filled.append((name, value))
        self._changed.set()

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        self.errors.append((kind, message))
        self._changed.set()
