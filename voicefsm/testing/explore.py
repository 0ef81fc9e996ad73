"""Property-based exploration: random callers, the same invariant as the fault runs.

Hypothesis draws caller behaviour for a bounded number of listens (an example answer, a wrong
one, keys, silence, talking over a prompt, hanging up) and every call must reach a final state
within bounded simulated time with no task left. A failure is shrunk to the shortest caller
that breaks the flow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.states import Ask
from voicefsm.testing.faults import BARGE_IN, GARBAGE_TEXT, HANG_UP, SILENCE, Action, _run
from voicefsm.testing.line import MONDAY


@dataclass(slots=True)
class ExploreReport:
    """What exploring one flow found."""

    flow: str
    examples: int = 0
    failure: str | None = None
    caller: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no drawn caller broke the flow."""
        return self.failure is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "flow": self.flow,
            "passed": self.passed,
            "examples": self.examples,
            "failure": self.failure,
            "caller": self.caller,
        }

    def __str__(self) -> str:
        if self.passed:
            return f"{self.flow}: {self.examples} random callers: passed"
        return f"{self.flow}: a random caller broke it: {self.failure}\n  caller: {self.caller}"


def caller_actions(flow: type[VoiceFlow]) -> list[Action]:
    """Everything a random caller may do at a listen of ``flow``."""
    actions: list[Action] = [SILENCE, HANG_UP, GARBAGE_TEXT[0], "#*"]
    for state in flow.states:
        if isinstance(state, Ask) and state.expectation is not None:
            expectation = state.expectation
            actions += list(expectation.examples()) + list(expectation.counter_examples())
            actions += ["#" + keys for keys in expectation.dtmf_examples()]
            actions += [BARGE_IN + text for text in expectation.examples()[:1]]
    return list(dict.fromkeys(actions))


def explore(
    flow_class: type[VoiceFlow],
    *,
    max_examples: int = 60,
    max_steps: int = 8,
    seed: int = 0,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
) -> ExploreReport:
    """Run ``max_examples`` random callers against ``flow_class``; deterministic for a ``seed``."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    report = ExploreReport(flow_class.__name__)
    actions = caller_actions(flow_class)
    day = today or MONDAY
    last: dict[str, Any] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.sampled_from(actions), max_size=max_steps))
    def one_caller(script: list[Action]) -> None:
        report.examples += 1
        _, problem = asyncio.run(_run(flow_class, script, day, max_simulated_s=max_simulated_s, wait_s=5.0))
        last.update(script=script, problem=problem)
        assert problem is None, problem

    try:
        one_caller()
    except AssertionError:
        report.failure = last.get("problem")
        report.caller = [_shown(action) for action in last.get("script", [])]
    return report


def _shown(action: Action) -> str:
    if action == SILENCE:
        return "(silence)"
    if action == HANG_UP:
        return "(hangs up)"
    if action.startswith(BARGE_IN):
        return f"(talks over the prompt) {action[len(BARGE_IN) :]}"
    if action.startswith("#"):
        return f"(keys) {action[1:]}"
    return action
