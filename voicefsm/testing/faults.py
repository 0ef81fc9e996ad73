"""Generated fault runs: the dynamic twin of ``voicefsm validate``'s static proof.

For every state a caller can reach, calls are run that reach it and then break something there:
the caller hangs up, the agent's speech fails, the recognizer dies, the caller never answers,
or the caller answers only garbage. Each call must reach a final state within bounded simulated
time, hang up the line, and leave no task behind. The static checks trust guards and flow code;
these runs do not, so a loop whose guard never lets go, or flow code that waits forever, is
caught here.

Paths are found by running the flow (breadth first over caller behaviours): starting from no
answers at all, each listening state is given every example answer and keypad input its
expectation declares and a wrong answer, until every state written in the flow has been entered
or the budget of runs is spent. Running rather than reading the spec means guards and slot
validation decide, as they do on a real call; a state the spec reaches but no caller does is
reported as unreached, with its spec path for a hint.

Time is simulated (:class:`~voicefsm.runtime.clock.VirtualClock`): a watchdog sleeps until the
bound on the same clock, so a flow that loops forever is stopped when simulated time reaches
the bound, and one that waits for nothing at all is stopped at once (the clock jumps straight to
the watchdog). Neither costs real waiting. Real-time deadlines (``asyncio.timeout`` in provider
code) are outside this model: the in-process line answers everything on the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.expect_base import Expectation, NoMatch
from voicefsm.flow.kinds import (
    DISCONNECTED,
    DONE,
    FAILURE,
    MACHINE_ANSWERED,
    TIMED_OUT,
    StepStub,
    events_received,
    kind_for,
)
from voicefsm.flow.spec import FlowSpec
from voicefsm.runtime.flow_runtime import FlowResult
from voicefsm.testing.line import MONDAY, FlowLine

Fault = Literal[
    "disconnected", "tts_error", "stt_error", "no_input", "garbage", "step_fails", "step_times_out", "none"
]  # fmt: skip
#: Every fault; each state is attacked with the ones its kind lists (``StateKind.fault_attacks``).
FAULTS: tuple[Fault, ...] = (
    "disconnected", "tts_error", "stt_error", "no_input", "garbage", "step_fails", "step_times_out"
)  # fmt: skip
FAULT_DOES: dict[Fault, str] = {
    "disconnected": "the caller hangs up as the state is entered",
    "tts_error": "synthesis of the state's prompt fails",
    "stt_error": "the recognizer dies as the state is entered",
    "no_input": "the caller says nothing from then on",
    "garbage": "the caller answers only nonsense words and stray keys from then on",
    "step_fails": "the state's step raises an error",
    "step_times_out": "the state's step never returns (it times out)",
    "none": "nothing was broken: the flow's own code did it",
}
_SEED_STRIDE = 5  # the seeds of the first five faults stay what they were before steps existed

SILENCE = "\x00silence"  # an action: say nothing at this listen
HANG_UP = "\x00hangup"  # an action: hang up at this listen
FORCE = "\x00step:"  # an action's prefix: "\x00step:<state>=<outcome>": that step's first run ends so
BARGE_IN = "!"  # an action's prefix: say the rest over the agent's next prompt
MACHINE = "\x00machine:"  # an action's prefix: answering-machine detection answers (the verdict follows)
#: The verdict a fault run's machine gives: its greeting ended with a beep.
MACHINE_VERDICT = "machine_end_beep"
GARBAGE_TEXT = (
    "zxq blorf wibble",
    "mmm hmm hmm",
    "the purple ceiling",
    "banana telescope seventeen",
    "uh",
    "can you hear the dog",
)
GARBAGE_KEYS = "0123456789*#"

Action = str  # what the caller does at one listen: words, "#keys", "!words", SILENCE or HANG_UP

#: Real seconds one call may take at most: simulated time costs none, so only a flow busy without
#: letting simulated time pass (or one waiting on real time) gets near this.
REAL_S_PER_CALL = 10.0


@dataclass(frozen=True, slots=True)
class FaultRun:
    """One call: reach ``state``, inject ``fault`` there, and see how the call ended."""

    state: str
    fault: Fault
    ok: bool
    outcome: str | None
    final_state: str | None
    simulated_s: float
    path: tuple[str, ...]
    problem: str | None = None
    caller: tuple[Action, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "state": self.state,
            "fault": self.fault,
            "ok": self.ok,
            "outcome": self.outcome,
            "final_state": self.final_state,
            "simulated_s": round(self.simulated_s, 3),
            "path": list(self.path[:40]),
            "caller": [shown(action) for action in self.caller],
            "problem": self.problem,
        }


@dataclass(slots=True)
class FaultReport:
    """Every fault run of one flow, and the states no caller behaviour reached."""

    flow: str
    runs: list[FaultRun] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    #: why each unreached state is so: the spec path that should reach it, or that none does
    unreached_why: dict[str, str] = field(default_factory=dict)
    #: real seconds the whole suite took (path finding included)
    elapsed_s: float = 0.0

    @property
    def failures(self) -> list[FaultRun]:
        """The runs that broke the invariant."""
        return [run for run in self.runs if not run.ok]

    @property
    def passed(self) -> bool:
        """True when every run ended cleanly and every state was reached."""
        return not self.failures and not self.unreached

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: counts, every failure, the unreached states, and every run."""
        return {
            "flow": self.flow,
            "passed": self.passed,
            "runs": len(self.runs),
            "states": len({run.state for run in self.runs}),
            "faults": list(dict.fromkeys(run.fault for run in self.runs)),
            "failures": [run.to_json() for run in self.failures],
            "unreached": [{"state": s, "why": self.unreached_why.get(s, "")} for s in self.unreached],
            "results": [
                {
                    "state": run.state,
                    "fault": run.fault,
                    "ok": run.ok,
                    "final_state": run.final_state,
                    "simulated_s": round(run.simulated_s, 3),
                }
                for run in self.runs
            ],
        }

    def _lines(self) -> list[tuple[str, str]]:
        """(style, text) lines shared by ``__str__`` and the rich rendering."""
        states = len({run.state for run in self.runs})
        head = f"{self.flow}: {len(self.runs)} fault runs over {states} states"
        lines = [("green" if self.passed else "red", f"{head}: {'passed' if self.passed else 'FAILED'}")]
        for run in self.failures:
            lines.append(("red", f"  {run.state} + {run.fault}: {run.problem}"))
            lines.append(("dim", f"      ({FAULT_DOES[run.fault]}; reached by: {_script(run.caller)})"))
        for state in self.unreached:
            why = self.unreached_why.get(state)
            lines.append(
                ("yellow", f"  {state}: no caller behaviour reaches it" + (f" ({why})" if why else ""))
            )
        return lines

    def __str__(self) -> str:
        return "\n".join(text for _, text in self._lines())

    def __rich__(self) -> Any:
        """The report for a rich console: failures in red, unreached states in yellow."""
        from rich.text import Text

        text = Text()
        for index, (style, line) in enumerate(self._lines()):
            text.append(("\n" if index else "") + line, style=style)
        return text


def forced(state: str, outcome: str) -> Action:
    """The action that makes the step in ``state`` end with ``outcome`` (a result, failure or timed_out)."""
    return f"{FORCE}{state}={outcome}"


def step_stub(outcome: str, why: str) -> StepStub:
    """A stub that makes a step end with ``outcome``."""
    if outcome == FAILURE:
        return StepStub(error=why)
    if outcome == TIMED_OUT:
        return StepStub(hang=True)
    return StepStub(result=None if outcome == DONE else outcome)


def _split(actions: Sequence[Action]) -> tuple[list[Action], dict[str, StepStub]]:
    """The caller's actions, and the stubs of forced step outcomes, by state."""
    caller = [action for action in actions if not action.startswith(FORCE)]
    stubs: dict[str, StepStub] = {}
    for action in actions:
        if action.startswith(FORCE):
            state, _, outcome = action[len(FORCE) :].partition("=")
            stubs[state] = step_stub(outcome, f"fault run: the step in {state} fails")
    return caller, stubs


def shown(action: Action) -> str:
    """A caller action as a person reads it."""
    if action.startswith(FORCE):
        state, _, outcome = action[len(FORCE) :].partition("=")
        return f"(the step in {state} ends with {outcome})"
    if action == SILENCE:
        return "(silence)"
    if action == HANG_UP:
        return "(hangs up)"
    if action.startswith(MACHINE):
        return f"(a machine answered: {action[len(MACHINE) :]})"
    if action.startswith(BARGE_IN):
        return f"(talks over the prompt) {action[len(BARGE_IN) :]}"
    if action.startswith("#"):
        return f"(keys) {action[1:]}"
    return action


def _script(actions: Sequence[Action]) -> str:
    return " / ".join(shown(action) for action in actions) or "no answer at all"


# -- one call ---------------------------------------------------------------------------------------


class _FaultLine(FlowLine):
    """A line whose caller plays a script, then breaks ``fault`` on entering ``fault_state``."""

    def __init__(
        self,
        flow: type[VoiceFlow],
        actions: Sequence[Action],
        *,
        today: dt.date,
        fault_state: str | None,
        fault: Fault | None,
        seed: int,
        wait_s: float,
    ) -> None:
        script, stubs = _split(actions)
        super().__init__(flow, today=today, wait_s=wait_s, stubs=stubs)
        self.script = script
        self.forced = set(stubs)
        self.fault_state = fault_state
        self.fault = fault
        self.rng = random.Random(seed)
        self.injected = False
        self.last_progress_s = 0.0  # simulated time of the last thing that happened on the line
        self.paths_at_listens: list[tuple[str, ...]] = []  # the states entered before each listen

    def on_transition(self, source: str, event: str, target: str) -> None:
        super().on_transition(source, event, target)
        self.last_progress_s = self.clock.now()
        if source in self.forced and source != self.fault_state:
            self.stubs.pop(source, None)  # a forced step outcome holds for its first run only
        if target != self.fault_state or self.injected:
            return
        # This runs before the runtime starts the state's work, so the fault hits that work.
        self.injected = True
        if self.fault == "disconnected":
            self.hang_up()
        elif self.fault == "tts_error":
            self.tts.fail_next(f"fault run: synthesis fails in {target}")
        elif self.fault == "stt_error":
            self.stt.fail(f"fault run: the recognizer dies in {target}")
        elif self.fault == "step_fails":
            self.stubs[target] = step_stub(FAILURE, f"fault run: the step fails in {target}")
        elif self.fault == "step_times_out":
            self.stubs[target] = step_stub(TIMED_OUT, "")

    def on_turn(self, turn: Any) -> None:
        super().on_turn(turn)
        self.last_progress_s = self.clock.now()

    def on_listen(self, state: str) -> None:
        super().on_listen(state)
        self.last_progress_s = self.clock.now()
        self.paths_at_listens.append(tuple(self.path))

    async def play_caller(self) -> None:
        """Act at each listen: the script until the fault is in, then silence (or garbage)."""
        with contextlib.suppress(AssertionError):  # the call ended: the judge says how
            await self._play_caller()

    async def _play_caller(self) -> None:
        script = iter(self.script)
        while True:
            await self.until(self._listening_or_ended, "the agent to listen")
            if self.run_task.done():
                return
            self._cursor_listens = len(self.listens)
            if self.injected:
                if self.fault == "garbage":
                    self._act(self._garbage(self.listens[-1]))
                continue  # every other fault: the caller has nothing more to say
            action = next(script, SILENCE)
            if action.startswith(BARGE_IN):
                await self.barge_in(action[len(BARGE_IN) :])  # over the next prompt, not now
                continue
            self._act(action)

    def _listening_or_ended(self) -> bool:
        return len(self.listens) > self._cursor_listens or self.run_task.done()

    def _garbage(self, state: str) -> Action:
        """Nonsense words or stray keys that ``state``'s expectation rejects (when any such exist)."""
        expectation = _expectation(self.flow, state)
        for _ in range(8):
            if self.rng.random() < 0.5:
                text = self.rng.choice(GARBAGE_TEXT)
                if expectation is None or _rejects(expectation.parse_text, text, self.today):
                    return text
            else:
                keys = self._stray_keys(expectation)
                if expectation is None or _rejects(expectation.parse_dtmf, keys, self.today):
                    return "#" + keys
        return GARBAGE_TEXT[0]

    def _stray_keys(self, expectation: Expectation | None) -> str:
        """Random keys that make one keypad entry (the runtime splits longer runs of keys)."""
        keypad = expectation.keypad() if expectation is not None else None
        terminator = keypad.terminator if keypad is not None else None
        longest = min(4, max(1, keypad.max_digits if keypad is not None else 4))
        alphabet = [key for key in GARBAGE_KEYS if key != terminator]
        keys = "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, longest)))
        if terminator and keypad is not None and len(keys) < keypad.max_digits:
            keys += terminator
        return keys

    def _act(self, action: Action) -> None:
        if action == SILENCE:
            return
        if action == HANG_UP:
            self.hang_up()
        elif action.startswith(MACHINE):
            self.machine_answers(action[len(MACHINE) :])
        elif action.startswith("#"):
            self.press(action[1:])
        else:
            self.say(action)


def _rejects(parse: Any, value: str, today: dt.date) -> bool:
    try:
        return isinstance(parse(value, today=today), NoMatch)
    except Exception:
        return True  # a parser that raises is a finding for the run itself, not for the choice


def _expectation(flow: type[VoiceFlow] | VoiceFlow, state: str) -> Expectation | None:
    found = next((s for s in flow.states if s.id == state), None)
    expectation = getattr(found, "expectation", None)
    return expectation if isinstance(expectation, Expectation) else None


@dataclass(slots=True)
class CallVerdict:
    """How one generated call went: ``problem`` is None when it ended cleanly in time."""

    line: FlowLine
    result: FlowResult | None
    problem: str | None
    simulated_s: float
    #: the chart's state when the call was judged (the one being entered, if flow code blocked)
    state: str | None = None
    #: a callback of the flow that blocked the call past its budget (the suite stops at the first)
    blocking: str | None = None


async def judge_call(
    flow: type[VoiceFlow],
    actions: Sequence[Action],
    *,
    today: dt.date = MONDAY,
    state: str | None = None,
    fault: Fault | None = None,
    max_simulated_s: float = 1800.0,
    seed: int = 0,
    real_s: float = REAL_S_PER_CALL,
) -> CallVerdict:
    """Run one call (the caller plays ``actions``, then ``fault`` hits ``state``) and judge its end.

    The call must reach a final state within ``max_simulated_s`` simulated seconds, hang up the
    line, close its queues (the transport's pump and the recognizer's reader then end on their
    own), and leave no task behind. Tasks the call left behind are named in the problem, then
    cancelled, so one leaky run does not spill into the next.
    """
    before = asyncio.all_tasks()
    line = _FaultLine(
        flow, actions, today=today, fault_state=state, fault=fault, seed=seed, wait_s=real_s + 5.0
    )
    problems: list[str] = []
    result: FlowResult | None = None
    await line.__aenter__()  # not `async with`: its exit asserts, and a leak is a finding here
    caller = asyncio.create_task(line.play_caller(), name="voicefsm-fault-caller")
    watchdog = asyncio.create_task(line.clock.sleep(max_simulated_s), name="voicefsm-fault-watchdog")
    blocking: str | None = None
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(real_s):
                await asyncio.wait({line.run_task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if not line.run_task.done():
            problems.append(_still_going(line, watchdog.done(), max_simulated_s, real_s))
    finally:
        for task in (caller, watchdog):
            task.cancel()
        await asyncio.wait([caller, watchdog])
    simulated_s = line.clock.now()
    chart_state = _chart_state(line)
    if line.run_task.done() and not line.run_task.cancelled():
        error = line.run_task.exception()
        if error is not None:
            problems.append(f"the runtime raised {error!r}")
        else:
            result = line.run_task.result()
            if result.final_state is None:
                problems.append(
                    f"ended without reaching a final state (outcome {result.outcome}; the runtime gave "
                    f"up in {line.state})"
                )
            elif result.outcome == "limit":
                chart_state = line.transitions[-1][0] if line.transitions else chart_state
                problems.append(_limited(line, chart_state))
            if not line.call.is_disconnected:
                problems.append("the flow finished but the line was never hung up")
            else:
                problems += await _not_closed(line, before | {caller, watchdog})
    await line.close()
    left = [
        task
        for task in asyncio.all_tasks() - before
        if not task.done() and task is not asyncio.current_task()
    ]
    if left:
        problems.append(f"left tasks behind: {sorted(task.get_name() for task in left)}")
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=1.0)
    blocked = _blocking(line)
    if blocked is not None:
        problems.insert(0, blocked.removesuffix(" (the test kit fails the call)"))
        blocking = blocked
        named = blocked.split(": ", 1)[0]  # "Flow.state: callback (file:line) blocked ..."
        chart_state = named.split(".", 1)[1] if "." in named else chart_state
    return CallVerdict(
        line, result, "; ".join(dict.fromkeys(problems)) or None, simulated_s, chart_state, blocking
    )


#: What a task of the line still running after the call ended means: a queue nobody closed.
_OWN_ENDING = {
    "scripted-stt-reader": "the recognizer's audio queue was never closed (it still waits for caller audio)",
}
_OUTBOUND_OPEN = "the outbound queue was never closed (the transport still waits for agent audio)"
SETTLE_REAL_S = 0.25


async def _not_closed(line: FlowLine, before: set[asyncio.Task[Any]]) -> list[str]:
    """Once the flow has ended and the line is down, the call's queues must be closed.

    The driver's send pump ends when the outbound queue closes (it is cancelled at teardown
    anyway, so that is asked of the call directly) and the recognizer's reader when the inbound
    queue does; both close on disconnect. Waits at most :data:`SETTLE_REAL_S` real seconds (no
    time at all when everything has ended). Tasks the flow itself started are left to the leak
    check after the line is closed.
    """
    problems = []
    try:
        async with asyncio.timeout(SETTLE_REAL_S):
            if await line.call.next_outbound() is not None:
                problems.append(_OUTBOUND_OPEN)
    except TimeoutError:
        problems.append(_OUTBOUND_OPEN)
    ending = [
        task
        for task in asyncio.all_tasks() - before
        if task.get_name() in _OWN_ENDING and task is not asyncio.current_task()
    ]
    if ending:
        await asyncio.wait(ending, timeout=SETTLE_REAL_S)
    return problems + [_OWN_ENDING[task.get_name()] for task in ending if not task.done()]


def _blocking(line: FlowLine) -> str | None:
    """The first report of flow code that blocked the call past its budget, or None."""
    return next((message for kind, message in line.errors if kind == "blocking"), None)


def _limited(line: FlowLine, state: str | None) -> str:
    """What a call that only a call limit ended says about the flow."""
    reason = next((message for kind, message in line.errors if kind == "limit"), "a call limit")
    steps = " -> ".join(line.path[-7:-1])
    if "max_duration_s" in reason:
        return (
            f"still going after {line.clock.now():g} simulated seconds, in {state}, when the flow's "
            f"max_duration_s ended it (last steps: {steps})"
        )
    reason = reason.removeprefix("limit reached: ")
    return f"loops in {state}: only a call limit ended it ({reason}; last steps: {steps})"


def _chart_state(line: FlowLine) -> str | None:
    try:
        return str(line.runtime.flow.current.id)
    except Exception:  # a chart mid-transition may have no single current state
        return line.state


def _where(line: _FaultLine) -> str | None:
    """The state the call is in; while flow code blocks a transition, the one being entered."""
    current = _chart_state(line)
    if line.state is not None and current != line.state:
        return f"{current} (its flow code is still running, entering it from {line.state})"
    return current


def _still_going(line: _FaultLine, bound_hit: bool, max_simulated_s: float, real_s: float) -> str:
    if not bound_hit:
        return (
            f"still busy in {_where(line)} after {real_s:g} real seconds with simulated time at "
            f"{line.clock.now():g} s: it loops without letting time pass, or waits on real time"
        )
    if line.clock.pending == 0:
        return (
            f"waits forever in {_where(line)}: nothing happened after {line.last_progress_s:g} simulated "
            "seconds and no timer was pending (if its flow code awaits the network or asyncio.sleep, "
            "that runs outside the simulated clock: give the flow a fake for its tests)"
        )
    return (
        f"still going after {max_simulated_s:g} simulated seconds, in {line.state} "
        f"(last steps: {' -> '.join(line.path[-6:])})"
    )


# -- paths to every state ---------------------------------------------------------------------------


def answers_for(flow: type[VoiceFlow], state: str) -> list[Action]:
    """What a caller might do in ``state``: each example answer and keypad input, then a wrong one;
    and be a machine, when the state has a transition on ``machine_answered``."""
    expectation = _expectation(flow, state)
    if expectation is None:
        return []
    wrong = [text for text in expectation.counter_examples() if text.strip()][:1]
    keys = ["#" + keys for keys in expectation.dtmf_examples()]
    found = flow.states_map.get(state) if hasattr(flow, "states_map") else None
    machine = [
        MACHINE + MACHINE_VERDICT
        for transition in (found.transitions if found is not None else ())
        if MACHINE_ANSWERED in (str(event) for event in transition.events)
    ][:1]
    return list(dict.fromkeys([*expectation.examples(), *keys, *wrong, *machine]))


async def find_paths(
    flow: type[VoiceFlow],
    *,
    today: dt.date = MONDAY,
    max_runs: int = 400,
    max_simulated_s: float = 1800,
    found_blocking: list[CallVerdict] | None = None,
) -> dict[str, list[Action]]:
    """For each state a caller can reach: the shortest list of actions found that enters it.

    Breadth first: a script of n answers is run (the caller is silent after them), and the listen
    its next answer would meet is given each of that state's answers as n + 1 answers to run.
    Every answer at a listen is run, but of the scripts that reach the same next listen by the
    same states only the first is extended, so a state that only some slot values lead to (a guard
    on the value, deeper than one answer) can be missed: it is then reported as unreached. Every
    outcome of every step met is tried too. A call whose flow code blocks past its budget stops the
    search (appended to ``found_blocking``).
    """
    reached: dict[str, list[Action]] = {}
    queue: deque[list[Action]] = deque([[]])
    seen: set[tuple[str, ...]] = set()
    steps_forced: set[tuple[str, str]] = set()
    blocked = found_blocking if found_blocking is not None else []
    runs = 0
    wanted = {state.id for state in FlowSpec.of(flow).states if not state.default}
    while queue and runs < max_runs and not wanted <= reached.keys():
        actions = queue.popleft()
        verdict = await judge_call(flow, actions, today=today, max_simulated_s=max_simulated_s)
        runs += 1
        line = verdict.line
        if verdict.blocking is not None:
            blocked.append(verdict)
            break
        assert isinstance(line, _FaultLine)
        for target in line.path:
            reached.setdefault(target, actions)
        # Every outcome of every step the call ran is tried once, from the first script that got there.
        for target in dict.fromkeys(line.path):
            for outcome in step_outcomes(flow, target):
                if (target, outcome) not in steps_forced:
                    steps_forced.add((target, outcome))
                    queue.append([*actions, forced(target, outcome)])
        answered = len(line.script)
        if len(line.listens) <= answered:
            continue  # the call ended before this script's next answer was wanted
        # Scripts that bring the call to the same listen by the same states continue alike (up to
        # slot values), so only the first is taken further: this keeps retries from multiplying.
        state = line.listens[answered]
        key = (state, *line.paths_at_listens[answered], *sorted(a for a in actions if a.startswith(FORCE)))
        if key in seen:
            continue
        seen.add(key)
        queue.extend([*actions, answer] for answer in answers_for(flow, state))
    return reached


def step_outcomes(flow: type[VoiceFlow], state: str) -> tuple[str, ...]:
    """The outcome events of the step in ``state`` (none when it is not a step)."""
    found = flow.states_map.get(state) if hasattr(flow, "states_map") else None
    if found is None or FAILURE not in events_received(found):
        return ()
    return tuple(event for event in kind_for(found).waits_for if event != DISCONNECTED)


def spec_path(spec: FlowSpec, target: str) -> list[str] | None:
    """The shortest chain of ``state -event->`` steps in the spec from the initial state to ``target``."""
    previous: dict[str, tuple[str, str] | None] = {spec.initial: None}
    queue = deque([spec.initial])
    while queue:
        state = queue.popleft()
        if state == target:
            steps: list[str] = []
            while (step := previous[state]) is not None:
                state, event = step
                steps.append(f"{state} -{event}->")
            return list(reversed(steps))
        for transition in spec.transitions:
            if transition.source == state and transition.target and transition.target not in previous:
                event = "/".join(transition.events) or "(eventless)"
                if transition.guards:
                    event += f" [{' and '.join(transition.guards)}]"
                previous[transition.target] = (state, event)
                queue.append(transition.target)
    return None


# -- the suite --------------------------------------------------------------------------------------


async def run_fault_suite_async(
    flow_class: type[VoiceFlow],
    *,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
    faults: Sequence[Fault] = FAULTS,
    max_path_runs: int = 400,
) -> FaultReport:
    """Every fault at every reachable state of ``flow_class``, on the running loop; see the module doc."""
    started = time.perf_counter()
    day = today or MONDAY
    report = FaultReport(flow_class.__name__)
    blocked: list[CallVerdict] = []
    paths = await find_paths(
        flow_class, today=day, max_runs=max_path_runs, max_simulated_s=max_simulated_s, found_blocking=blocked
    )
    spec = FlowSpec.of(flow_class)
    if blocked:  # flow code that blocks is the finding: nothing else is worth the real time it costs
        report.runs.append(_run_of(blocked[0], blocked[0].state or spec.initial, "none", []))
        report.elapsed_s = time.perf_counter() - started
        return report
    for index, state in enumerate(spec.states):
        if state.default:
            continue  # hung_up and failed: entered by the faults themselves
        if state.id not in paths:
            report.unreached.append(state.id)
            steps = spec_path(spec, state.id)
            report.unreached_why[state.id] = (
                f"the spec reaches it by {' '.join(steps)} {state.id}, but no answer tried got there"
                if steps
                else "no transition leads to it"
            )
            continue
        attacks = kind_for(flow_class.states_map[state.id]).fault_attacks
        for fault in [fault for fault in faults if fault in attacks]:
            verdict = await judge_call(
                flow_class,
                paths[state.id],
                today=day,
                state=state.id,
                fault=fault,
                max_simulated_s=max_simulated_s,
                seed=index * _SEED_STRIDE + FAULTS.index(fault),
            )
            report.runs.append(_run_of(verdict, state.id, fault, paths[state.id]))
            if verdict.blocking is not None:
                report.elapsed_s = time.perf_counter() - started
                return report
    report.elapsed_s = time.perf_counter() - started
    return report


def _run_of(verdict: CallVerdict, state: str, fault: Fault, actions: Sequence[Action]) -> FaultRun:
    result = verdict.result
    return FaultRun(
        state,
        fault,
        verdict.problem is None,
        result.outcome if result is not None else None,
        result.final_state if result is not None else None,
        verdict.simulated_s,
        tuple(verdict.line.path),
        verdict.problem,
        tuple(actions),
    )


def run_fault_suite(
    flow_class: type[VoiceFlow],
    *,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
    faults: Sequence[Fault] = FAULTS,
    max_path_runs: int = 400,
) -> FaultReport:
    """Run :func:`run_fault_suite_async` on a fresh event loop (for the CLI, plain tests and scripts)."""
    return asyncio.run(
        run_fault_suite_async(
            flow_class,
            today=today,
            max_simulated_s=max_simulated_s,
            faults=faults,
            max_path_runs=max_path_runs,
        )
    )
