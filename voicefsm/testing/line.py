"""An in-process phone line for flow tests: a real Call and flow run, no socket, simulated time.

The call runs through the same driver as a served call (:func:`voicefsm.runtime.driver.run_call`)
over an in-process far end (:class:`~voicefsm.transports.memory.MemoryFarEnd`). The driver's
playout clock "plays" outbound audio on the virtual clock (8000 mu-law bytes a second) and
confirms each mark once the audio before it has played; a clear forgets what was still to play.
The caller is scripted: :meth:`FlowLine.say` goes through :class:`ScriptedSpeechToText`
(partials, then the final), :meth:`FlowLine.press` sends keys down the line, and silence costs
nothing: the virtual clock jumps to the next timer whenever the loop is idle, so a 6 s no-input
timeout fires at once and in the same order every run.

Every wait is bounded by a real-time timeout, so a flow that hangs fails the test (naming what
was awaited and the path so far) instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType

from voicefsm.core.events import CallStarted, MachineDetected
from voicefsm.core.intents import ClearBuffer, OutboundItem, PlayAudio
from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.resources import fakes_for
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import VirtualClock
from voicefsm.runtime.driver import CallLimits, run_call
from voicefsm.runtime.flow_runtime import (
    FlowListener,
    FlowResult,
    FlowRuntime,
    RuntimeLimits,
    Turn,
    TurnLatency,
)
from voicefsm.runtime.session import CallSession, FlowRun
from voicefsm.runtime.snapshot import FlowSnapshot, SnapshotSink
from voicefsm.telephony.recording import RecordingActions
from voicefsm.transports.memory import MemoryFarEnd

MONDAY = dt.date(2024, 6, 3)
CALLER = "+15550001234"
CALL_ID = "CA" + "0" * 32
WAIT_S = 5.0  # real seconds; simulated waits take none, so only a hang gets near this
#: The test line's driver: it never idles out (its far end sends no audio) and starts at once.
LINE_LIMITS = CallLimits(start_timeout_s=WAIT_S, idle_timeout_s=None)


class FlowLine(FlowListener):
    """One call to ``flow`` over an in-process line. Use as ``async with FlowLine(Booking) as line:``.

    Drive it as the caller (:meth:`answer`, :meth:`keys`, :meth:`stay_silent`, :meth:`barge_in`,
    :meth:`hang_up`), wait for the agent (:meth:`heard`, :meth:`speaking`, :meth:`listening`,
    :meth:`ended`), then read what happened (:attr:`path`, :attr:`agent_said`, :attr:`turns`,
    :attr:`transitions`, :attr:`slots`, :attr:`outcome`, :attr:`errors`, :attr:`actions`, and
    :attr:`latencies`: each caller turn's wait for its answer, by stage) or
    assert on it (:meth:`assert_said`, :meth:`assert_path`, :meth:`assert_state`,
    :meth:`assert_slots`, :meth:`assert_outcome`: their failures show the conversation so far).
    On a clean exit it asserts that the call left no task behind. ``speak_ahead=True`` synthesizes
    each next prompt ahead of need, as a served call does.
    """

    def __init__(
        self,
        flow: type[VoiceFlow] | VoiceFlow,
        *,
        caller: str | None = CALLER,
        today: dt.date = MONDAY,
        echo_marks: bool = True,
        limits: RuntimeLimits | None = None,
        actions: RecordingActions | None = None,
        wait_s: float = WAIT_S,
        clock: VirtualClock | None = None,
        resources: Mapping[str, object] | None = None,
        stubs: Mapping[str, object] | None = None,
        speak_ahead: bool = False,
        restore: FlowSnapshot | None = None,
        snapshots: SnapshotSink | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> None:
        self.flow = flow
        #: Synthesize each next prompt ahead of need, as a served call does (``tts.spoken`` then also
        #: lists the prompts synthesized ahead, heard or not).
        self.speak_ahead = speak_ahead
        #: Resume from this snapshot instead of starting; ``snapshots`` receives the flow's snapshots.
        self.restore = restore
        self.snapshots = snapshots
        #: The call's custom parameters (a campaign's CSV row: ``self.parameters`` in the flow).
        self.parameters = dict(parameters or {})
        #: Resources by name over the flow's declared fakes.
        self.resources = resources
        #: Step stubs by state id or method (a dict given is kept, so it can change during the call).
        self.stubs: dict[str, object] = stubs if isinstance(stubs, dict) else dict(stubs or {})
        self.caller = caller
        self.today = today
        self.echo_marks = echo_marks
        self.limits = limits
        self.wait_s = wait_s
        self.clock = clock or VirtualClock()  # lines on one event loop must share one clock
        self._owns_clock = clock is None
        self.tts = ScriptedTextToSpeech()
        self.stt = ScriptedSpeechToText()
        self.actions = actions or RecordingActions()
        self.turns: list[Turn] = []
        #: How long each caller turn waited for its answer, stage by stage (runtime clock).
        self.latencies: list[TurnLatency] = []
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
        self._barged = 0
        self._listen_moves: list[int] = []  # transitions taken before each listen
        self.far_end = MemoryFarEnd(echoes_marks=not echo_marks, on_intent=self._heard_item)
        self._run: FlowRun | None = None
        self._opened = asyncio.Event()
        self._go = asyncio.Event()  # the flow starts once the test has the line in hand

    # -- setup and teardown -----------------------------------------------------------------------

    async def __aenter__(self) -> FlowLine:
        self._before = asyncio.all_tasks()
        if isinstance(self.flow, VoiceFlow) and self.flow.caller is None:
            self.flow.caller = self.caller
        self.far_end.start(CALL_ID, self.caller, self.parameters)
        self.run_task = asyncio.create_task(self._run_call(), name="line-flow")
        self.run_task.add_done_callback(lambda _: self._changed.set())
        opened = asyncio.create_task(self._opened.wait(), name="line-open")
        await asyncio.wait([opened, self.run_task], timeout=self.wait_s, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        await asyncio.wait([opened])
        if not self._opened.is_set():
            await self.close()
            raise AssertionError(f"the test line did not open within {self.wait_s:g} s")
        self._go.set()
        return self

    @contextlib.asynccontextmanager
    async def _session(self, started: CallStarted) -> AsyncIterator[CallSession]:
        flow_cls = self.flow if isinstance(self.flow, type) else type(self.flow)
        self.call = Call(
            call_sid=started.call_id,
            caller=started.caller,
            parameters=started.parameters,
            stt_factory=(lambda: self.stt) if flow_cls.uses_stt else None,
        )
        self._run = FlowRun(
            self.call,
            self.flow,
            self.tts,
            actions=self.actions,
            clock=self.clock,
            listeners=[self],
            today=lambda: self.today,
            limits=self.limits,
            resources=fakes_for(
                self.flow if isinstance(self.flow, type) else type(self.flow), given=self.resources
            ),
            stubs=self.stubs,
            speak_ahead=self.speak_ahead,
            restore=self.restore,
            snapshots=self.snapshots,
        )
        self._opened.set()
        await self._go.wait()
        yield CallSession(self.call, self._run, self.clock)

    async def _run_call(self) -> FlowResult:
        reason = await run_call(self.far_end, self._session, LINE_LIMITS)
        if reason.startswith("internal error"):  # the driver itself broke: nothing the flow did
            raise AssertionError(f"the test line's driver failed: {reason}; {self.describe()}")
        run = self._run
        if run is not None and run.error is not None:
            raise run.error
        if run is None or run.result is None:
            raise AssertionError(f"the flow never ran on the test line; {self.describe()}")
        return run.result

    @property
    def runtime(self) -> FlowRuntime:
        """The flow's runtime, once the line is open."""
        if self._run is None:
            raise RuntimeError("the line is not open yet: use it as `async with FlowLine(flow) as line:`")
        return self._run.runtime

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
        if exc_type is None:
            left = self.tasks_left()
            assert not left, f"tasks left behind by the call: {left}"

    async def close(self) -> None:
        """End the line: hang it up if the call still runs, await its end, release the clock."""
        if not self.run_task.done():
            self.run_task.cancel()
        await asyncio.wait([self.run_task])
        if self._owns_clock:
            self.clock.close()

    def cancel_leftovers(self) -> list[str]:
        """Cancel tasks the call left behind (so they cannot disturb the next call); returns their names."""
        left = [task for task in asyncio.all_tasks() - self._before if not task.done()]
        left = [task for task in left if task is not asyncio.current_task()]
        for task in left:
            task.cancel()
        return sorted(task.get_name() for task in left)

    def tasks_left(self) -> list[str]:
        """Names of tasks started since the line opened that are still alive."""
        return sorted(task.get_name() for task in asyncio.all_tasks() - self._before if not task.done())

    # -- the far end ------------------------------------------------------------------------------

    def _heard_item(self, item: OutboundItem) -> None:
        if isinstance(item, PlayAudio):
            self.audio_bytes += len(item.ulaw)
            self._changed.set()
        elif isinstance(item, ClearBuffer):
            self.clears += 1

    # -- the caller: immediate --------------------------------------------------------------------

    def say(self, text: str, *, partials: bool = True) -> None:
        """The caller says ``text`` now (interim hypotheses word by word, then the final)."""
        self.stt.say(text, partials=partials)

    def press(self, keys: str) -> None:
        """The caller presses ``keys`` now, one digit after another without a pause."""
        self.far_end.press(keys)

    def hang_up(self) -> None:
        """The caller hangs up."""
        self.far_end.hang_up("caller hung up")

    def machine_answers(self, answered_by: str = "machine_end_beep") -> None:
        """Answering-machine detection answers now with ``answered_by`` (Twilio's AnsweredBy)."""
        self.call.emit(MachineDetected(answered_by))

    # -- the caller: in turn ----------------------------------------------------------------------

    async def answer(self, text: str) -> str:
        """Wait until the agent listens, then say ``text``; returns the listening state."""
        state = await self.next_listen()
        self.say(text)
        return state

    async def keys(self, keys: str) -> str:
        """Wait until the agent listens, then press ``keys``; returns the listening state."""
        state = await self.next_listen()
        self.press(keys)
        return state

    async def stay_silent(self) -> str:
        """Wait until the agent listens, then say nothing until it re-prompts or moves on."""
        state = await self.next_listen()
        moves, listens = len(self.transitions), len(self.listens)
        await self.until(
            lambda: len(self.transitions) > moves or len(self.listens) > listens or self.run_task.done(),
            f"the no-input timer of {state}",
        )
        return state

    async def silence(self) -> str:
        """The same as :meth:`stay_silent` (the scenario files' word for it)."""
        return await self.stay_silent()

    async def barge_in(self, text: str) -> str:
        """Wait until a prompt is playing (one not talked over yet), then talk over it; returns it."""

        def playing() -> bool:
            started = len(self.tts.spoken)
            finished = sum(1 for turn in self.turns if turn.speaker == "agent")
            return started > max(finished, self._barged) and self.audio_bytes > 0

        await self.until(playing, "the agent to be speaking, to talk over it")
        self._barged = len(self.tts.spoken)
        self.say(text)
        return self.tts.spoken[-1]

    # -- waiting ----------------------------------------------------------------------------------

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; after ``wait_s`` real seconds, fail naming ``what``."""
        try:
            async with asyncio.timeout(self.wait_s):
                while not predicate():
                    if self.run_task.done() and not predicate():
                        raise AssertionError(f"the call ended while waiting for {what}; {self.describe()}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"gave up waiting for {what}; {self.describe()}") from None

    async def next_listen(self) -> str:
        """Wait until the agent listens again, still in the state it listens in.

        A listen already answered, or one the call has since moved on from (a prompt the caller
        talked over and answered), does not count.
        """

        def listening_now() -> bool:
            unanswered = len(self.listens) > self._cursor_listens
            return unanswered and self._listen_moves[-1] == len(self.transitions)

        await self.until(listening_now, "the agent to listen")
        self._cursor_listens = len(self.listens)
        return self.listens[-1]

    async def speaking(self, fragment: str | re.Pattern[str]) -> str:
        """Wait until a prompt matching ``fragment`` has started (after the last one found); returns it."""
        found: list[str] = []

        def started() -> bool:
            for index in range(self._cursor_spoken, len(self.tts.spoken)):
                if _matches(fragment, self.tts.spoken[index]) and self.audio_bytes:
                    self._cursor_spoken = index + 1
                    found.append(self.tts.spoken[index])
                    return True
            return False

        await self.until(started, f"the agent to start saying {_shown(fragment)}")
        return found[0]

    async def heard(self, fragment: str | re.Pattern[str]) -> Turn:
        """Wait until the agent has finished a prompt matching ``fragment``; returns its turn.

        A string matches when it occurs in the prompt (case-insensitive); a compiled pattern is
        searched for. Prompts before the last one matched are not looked at again.
        """
        found: list[Turn] = []

        def finished() -> bool:
            for index in range(self._cursor_turns, len(self.turns)):
                turn = self.turns[index]
                if turn.speaker == "agent" and _matches(fragment, turn.text):
                    self._cursor_turns = index + 1
                    found.append(turn)
                    return True
            return False

        await self.until(finished, f"the agent to say {_shown(fragment)}")
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
    def state(self) -> str | None:
        """The state the call is in now (None before the first)."""
        return self.transitions[-1][2] if self.transitions else None

    @property
    def agent_said(self) -> list[str]:
        """Every agent prompt that was played out or cut off, in order (failed ones are in ``errors``)."""
        return [turn.text for turn in self.turns if turn.speaker == "agent"]

    @property
    def slots(self) -> dict[str, object]:
        """The slots filled so far (the last value of each)."""
        return dict(self.slots_filled)

    @property
    def result(self) -> FlowResult | None:
        """How the flow ended (None while it runs)."""
        if not self.run_task.done() or self.run_task.cancelled() or self.run_task.exception():
            return None
        return self.run_task.result()

    @property
    def outcome(self) -> str | None:
        """The call's outcome (``completed``, ``hung_up``...), None while it runs."""
        result = self.result
        return result.outcome if result else None

    def describe(self, last: int = 8) -> str:
        """The conversation so far (its ``last`` turns), for failure messages."""
        lines = [f"path: {' -> '.join(self.path) or '(none)'}"]
        if len(self.turns) > last:
            lines.append(f"  ... {len(self.turns) - last} earlier turns")
        lines += [f"  {turn.speaker}: {turn.text}" for turn in self.turns[-last:]]
        if self.errors:
            lines.append(f"errors: {self.errors}")
        return "\n".join(lines)

    # -- assertions -------------------------------------------------------------------------------

    def assert_said(self, expected: str | re.Pattern[str], *, exact: bool = False) -> str:
        """Assert that some agent prompt matches ``expected``; returns the first that does.

        A string matches a prompt it occurs in (case-insensitive), or only an identical prompt
        with ``exact=True``; a compiled pattern is searched for.
        """
        for text in self.agent_said:
            if (text == expected) if exact and isinstance(expected, str) else _matches(expected, text):
                return text
        how = "exactly " if exact and isinstance(expected, str) else ""
        raise AssertionError(f"the agent never said {how}{_shown(expected)}\n{self.describe(last=30)}")

    def assert_path(self, *states: str) -> None:
        """Assert that the states entered so far are exactly ``states``, in order."""
        if self.path != list(states):
            raise AssertionError(
                f"expected the path {' -> '.join(states) or '(none)'}\n"
                f"     but it was {' -> '.join(self.path) or '(none)'}"
                f"{_first_difference(list(states), self.path)}\n{self.describe(last=30)}"
            )

    def assert_state(self, state: str) -> None:
        """Assert that the call is in ``state`` now (for an ended call: its final state)."""
        if self.state != state:
            raise AssertionError(
                f"expected the call in {state!r}, it is in {self.state!r}\n{self.describe()}"
            )

    def assert_slots(self, **expected: object) -> None:
        """Assert slot values; ``"10:30"`` matches a time and ``"2024-06-11"`` a date."""
        problems = []
        for name, wanted in expected.items():
            if name not in self.slots:
                filled = ", ".join(f"{key}={value!r}" for key, value in self.slots.items()) or "none"
                problems.append(f"slot {name!r} was never filled (filled: {filled})")
            elif not slot_matches(self.slots[name], wanted):
                problems.append(f"slot {name!r}: expected {wanted!r}, got {self.slots[name]!r}")
        if problems:
            raise AssertionError("\n".join(problems) + "\n" + self.describe())

    def assert_outcome(self, outcome: str) -> None:
        """Assert that the call has ended with ``outcome`` (``completed``, ``hung_up``, ``gave_up``...)."""
        result = self.result
        if result is None:
            raise AssertionError(
                f"expected the outcome {outcome!r}, but the call has not ended (await line.ended() first)"
                f"\n{self.describe()}"
            )
        if result.outcome != outcome:
            raise AssertionError(
                f"expected the outcome {outcome!r}, got {result.outcome!r} "
                f"(final state {result.final_state!r}, ended by {result.ended_by!r})\n{self.describe()}"
            )

    # -- FlowListener -----------------------------------------------------------------------------

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.transitions.append((source, event, target))
        self._changed.set()

    def on_turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._changed.set()

    def on_turn_latency(self, latency: TurnLatency) -> None:
        self.latencies.append(latency)
        self._changed.set()

    def on_listen(self, state: str) -> None:
        self.listens.append(state)
        self._listen_moves.append(len(self.transitions))
        self._changed.set()

    def on_slot(self, name: str, value: object) -> None:
        self.slots_filled.append((name, value))
        self._changed.set()

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        self.errors.append((kind, message))
        self._changed.set()


def slot_matches(actual: object, wanted: object) -> bool:
    """Equal, or equal as written in a test: ``"10:30"`` for a time, ``"2024-06-11"`` for a date."""
    if actual == wanted:
        return True
    if isinstance(actual, dt.time) and isinstance(wanted, str):
        return actual.isoformat(timespec="minutes" if actual.second == 0 else "seconds") == wanted
    if isinstance(actual, dt.time) and isinstance(wanted, int):  # YAML 1.1 reads 10:30 as 630
        return actual.hour * 60 + actual.minute == wanted
    return str(actual) == str(wanted)


def _first_difference(expected: list[str], actual: list[str]) -> str:
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return f"\n     (step {index + 1}: expected {want!r}, entered {got!r})"
    return ""


def _matches(fragment: str | re.Pattern[str], text: str) -> bool:
    if isinstance(fragment, re.Pattern):
        return fragment.search(text) is not None
    return fragment.lower() in text.lower()


def _shown(fragment: str | re.Pattern[str]) -> str:
    return f"/{fragment.pattern}/" if isinstance(fragment, re.Pattern) else repr(fragment)
