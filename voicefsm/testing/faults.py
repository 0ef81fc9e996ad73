"""Generated fault runs: the dynamic twin of ``voicefsm validate``'s static proof.

For every state a caller can reach, calls are run that reach it and then break something there:
the caller hangs up, the agent's speech fails, the recognizer dies, the caller never answers,
or the caller answers only garbage. Each call must reach a final state within bounded simulated
time and leave no task behind. The static checks trust guards and flow code; these runs do not,
so a loop whose guard never lets go, or flow code that waits forever, is caught here.

Paths are found by running the flow: starting from no answers at all, each listening state is
given every example answer its expectation declares, a wrong answer and silence, breadth first,
until every state has been entered or the budget of runs is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.spec import FlowSpec
from voicefsm.flow.states import Ask
from voicefsm.testing.line import MONDAY, FlowLine

Fault = Literal["disconnected", "tts_error", "stt_error", "no_input", "garbage"]
FAULTS: tuple[Fault, ...] = ("disconnected", "tts_error", "stt_error", "no_input", "garbage")
SILENCE = "\x00silence"  # an action: say nothing at this listen
HANG_UP = "\x00hangup"  # an action: hang up at this listen
BARGE_IN = "!"  # an action's prefix: say the rest over the agent's next prompt
GARBAGE_TEXT = ("zxq blorf wibble", "mmm hmm hmm", "the purple ceiling")
GARBAGE_KEYS = ("*", "9#", "0")

Action = str  # what the caller does at one listen: words, "#keys", "!words", SILENCE or HANG_UP


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
            "problem": self.problem,
        }


@dataclass(slots=True)
class FaultReport:
    """Every fault run of one flow."""

    flow: str
    runs: list[FaultRun] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[FaultRun]:
        """The runs that broke the invariant."""
        return [run for run in self.runs if not run.ok]

    @property
    def passed(self) -> bool:
        """True when every run ended cleanly and every state was reached."""
        return not self.failures and not self.unreached

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "flow": self.flow,
            "passed": self.passed,
            "runs": len(self.runs),
            "failures": [run.to_json() for run in self.failures],
            "unreached": self.unreached,
        }

    def __str__(self) -> str:
        states = len({run.state for run in self.runs})
        head = f"{self.flow}: {len(self.runs)} fault runs over {states} states"
        lines = [f"{head}: {'passed' if self.passed else 'FAILED'}"]
        lines += [f"  {run.state} + {run.fault}: {run.problem}" for run in self.failures]
        lines += [f"  {state}: no caller behaviour reaches it" for state in self.unreached]
        return "\n".join(lines)


class _ScriptedLine(FlowLine):
    """A line that plays a list of caller actions, then injects a fault on entering a state."""

    def __init__(self, flow: type[VoiceFlow], actions: Sequence[Action], today: dt.date, **kw: Any) -> None:
        super().__init__(flow, today=today, **kw)
        self.script = list(actions)
        self.fault_state: str | None = None
        self.fault: Fault | None = None
        self.injected = asyncio.Event()

    def on_transition(self, source: str, event: str, target: str) -> None:
        super().on_transition(source, event, target)
        if target == self.fault_state and not self.injected.is_set():
            self.injected.set()
            if self.fault == "disconnected":
                self.hang_up()
            elif self.fault == "tts_error":
                self.tts.fail_next()
            elif self.fault == "stt_error":
                self.stt.fail()

    async def play_caller(self, garbage: bool = False) -> None:
        """Act at each listen: the script, then silence (or garbage once the fault is in)."""
        with contextlib.suppress(AssertionError):  # the call ended or stalled: _run judges that
            await self._play_caller(garbage)

    async def _play_caller(self, garbage: bool) -> None:
        script = iter(self.script)
        counter = itertools.count()
        while True:
            await self.until(self._listening_or_ended, "the agent to listen")
            if self.run_task.done():
                return
            self._cursor_listens = len(self.listens)
            if self.injected.is_set() and garbage:
                turn = next(counter)
                self._act(GARBAGE_TEXT[turn % 3] if turn % 2 == 0 else "#" + GARBAGE_KEYS[turn % 3])
                continue
            action = next(script, SILENCE)
            if action.startswith(BARGE_IN):
                await self.speaking("")
                action = action[len(BARGE_IN) :]
            self._act(action)

    def _listening_or_ended(self) -> bool:
        return len(self.listens) > self._cursor_listens or self.run_task.done()

    def _act(self, action: Action) -> None:
        if action == SILENCE:
            return
        if action == HANG_UP:
            self.hang_up()
        elif action.startswith("#"):
            self.press(action[1:])
        else:
            self.say(action)


async def _run(
    flow: type[VoiceFlow],
    actions: Sequence[Action],
    today: dt.date,
    *,
    state: str | None = None,
    fault: Fault | None = None,
    max_simulated_s: float,
    wait_s: float,
) -> tuple[_ScriptedLine, str | None]:
    """One call; returns the line and a problem, or None when it ended cleanly in time."""
    line = _ScriptedLine(flow, actions, today, wait_s=wait_s)
    line.fault_state, line.fault = state, fault
    problem: str | None = None
    await line.__aenter__()  # not `async with`: its exit asserts, and a leak is a finding here
    caller = asyncio.create_task(line.play_caller(garbage=fault == "garbage"), name="fault-caller")
    try:
        await line.until(
            lambda: line.run_task.done() or line.clock.now() > max_simulated_s, "the call to end"
        )
        if not line.run_task.done():
            problem = (
                f"still going after {max_simulated_s:g} simulated seconds, in {line.state} "
                f"(last steps: {' -> '.join(line.path[-6:])})"
            )
        elif line.run_task.exception() is not None:
            problem = f"the runtime raised {line.run_task.exception()!r}"
    except AssertionError:
        problem = f"waits forever in {line.state}: nothing happens and no timer is pending"
    finally:
        caller.cancel()
        await asyncio.wait([caller])
        await line.close()
    left = line.tasks_left()
    if left and problem is None:
        problem = f"left tasks behind: {left}"
    return line, problem


def _answers(flow: type[VoiceFlow], state: str) -> list[Action]:
    """What a caller might do in ``state``: each example answer and keypad input, a wrong one, silence."""
    found = next((s for s in flow.states if s.id == state), None)
    if not isinstance(found, Ask) or found.expectation is None:
        return [SILENCE]
    expectation = found.expectation
    wrong = [text for text in expectation.counter_examples() if text.strip()][:1]
    keys = ["#" + keys for keys in expectation.dtmf_examples()]
    return [*expectation.examples(), *keys, *wrong, SILENCE]


async def find_paths(
    flow: type[VoiceFlow], *, today: dt.date = MONDAY, max_runs: int = 400, max_simulated_s: float = 3600
) -> dict[str, list[Action]]:
    """For each state a caller can reach: the shortest list of actions found that enters it."""
    reached: dict[str, list[Action]] = {}
    queue: deque[list[Action]] = deque([[]])
    seen_listens: set[tuple[str, ...]] = set()
    runs = 0
    wanted = {state.id for state in FlowSpec.of(flow).states if not state.default}
    while queue and runs < max_runs and not wanted <= reached.keys():
        actions = queue.popleft()
        line, _ = await _run(flow, actions, today, max_simulated_s=max_simulated_s, wait_s=2.0)
        runs += 1
        for target in line.path:
            reached.setdefault(target, actions)
        # the listen this script's next action would answer, if the call got that far
        listens = line.listens
        if len(listens) <= len(actions):
            continue
        state = listens[len(actions)]
        key = (*listens[: len(actions) + 1], *line.path)
        if key in seen_listens:
            continue
        seen_listens.add(key)
        queue.extend([*actions, answer] for answer in _answers(flow, state) if answer != SILENCE)
    return reached


async def run_fault_suite_async(
    flow_class: type[VoiceFlow],
    *,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
    faults: Sequence[Fault] = FAULTS,
) -> FaultReport:
    """Every fault at every reachable state of ``flow_class``; see the module docstring."""
    day = today or MONDAY
    report = FaultReport(flow_class.__name__)
    paths = await find_paths(flow_class, today=day)
    spec = FlowSpec.of(flow_class)
    for state in spec.states:
        if state.default:
            continue
        if state.id not in paths:
            report.unreached.append(state.id)
            continue
        for fault in faults:
            line, problem = await _run(
                flow_class,
                paths[state.id],
                day,
                state=state.id,
                fault=fault,
                max_simulated_s=max_simulated_s,
                wait_s=5.0,
            )
            ended = line.run_task.done() and not line.run_task.cancelled() and not line.run_task.exception()
            result = line.run_task.result() if ended else None
            report.runs.append(
                FaultRun(
                    state.id,
                    fault,
                    problem is None,
                    getattr(result, "outcome", None),
                    getattr(result, "final_state", None),
                    line.clock.now(),
                    tuple(line.path),
                    problem,
                )
            )
    return report


def run_fault_suite(
    flow_class: type[VoiceFlow],
    *,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
    faults: Sequence[Fault] = FAULTS,
) -> FaultReport:
    """Run :func:`run_fault_suite_async` on a fresh event loop (for the CLI and plain scripts)."""
    return asyncio.run(
        run_fault_suite_async(flow_class, today=today, max_simulated_s=max_simulated_s, faults=faults)
    )
