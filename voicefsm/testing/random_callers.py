"""Property-based exploration: random callers, the same invariant as the fault runs.

Hypothesis draws what the caller does at each of a bounded number of listens (an example answer,
a wrong one, nonsense, stray keys, silence, talking over the prompt, hanging up); after the last
one the caller is silent. Every call must reach a final state within bounded simulated time,
hang up the line and leave no task behind (:func:`voicefsm.testing.faults.judge_call`). A failure
is shrunk to the shortest, simplest caller that still breaks the flow: shrinking prefers fewer
steps and, at each step, silence.

Runs are deterministic for a ``seed`` (no example database is read or written), so the CLI and
CI see the same callers every time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.expect_base import Expectation
from voicefsm.testing.faults import (
    BARGE_IN,
    GARBAGE_KEYS,
    GARBAGE_TEXT,
    HANG_UP,
    SILENCE,
    Action,
    judge_call,
    shown,
)
from voicefsm.testing.line import MONDAY


@dataclass(slots=True)
class ExploreReport:
    """What exploring one flow with random callers found."""

    flow: str
    examples: int = 0
    seed: int = 0
    max_steps: int = 0
    failure: str | None = None
    #: the (shrunk) caller that broke the flow, as a person reads it
    caller: list[str] = field(default_factory=list)
    #: the state the failing call was in when it was judged
    state: str | None = None
    #: a digest of every caller tried, in order: equal digests mean the same exploration
    digest: str = ""
    elapsed_s: float = 0.0

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
            "seed": self.seed,
            "max_steps": self.max_steps,
            "failure": self.failure,
            "state": self.state,
            "caller": self.caller,
        }

    def __str__(self) -> str:
        if self.passed:
            return (
                f"{self.flow}: {self.examples} random callers of up to {self.max_steps} steps "
                f"(seed {self.seed}): passed"
            )
        caller = " / ".join(self.caller) or "(says nothing at all)"
        return f"{self.flow}: a random caller broke it in {self.state}: {self.failure}\n  caller: {caller}"

    def __rich__(self) -> Any:
        """The report for a rich console."""
        from rich.text import Text

        return Text(str(self), style="green" if self.passed else "red")


def caller_actions(flow: type[VoiceFlow]) -> list[Action]:
    """The named things a random caller may do at a listen of ``flow`` (silence first: it shrinks there)."""
    actions: list[Action] = [SILENCE, HANG_UP, *GARBAGE_TEXT[:2]]
    for state in flow.states:
        expectation = getattr(state, "expectation", None)
        if isinstance(expectation, Expectation):
            actions += list(expectation.examples()) + list(expectation.counter_examples())
            actions += ["#" + keys for keys in expectation.dtmf_examples()]
            actions += [BARGE_IN + text for text in expectation.examples()[:2]]
    return list(dict.fromkeys(action for action in actions if action.strip("#!")))


def explore(
    flow_class: type[VoiceFlow],
    *,
    max_examples: int = 60,
    max_steps: int = 8,
    seed: int = 0,
    today: dt.date | None = None,
    max_simulated_s: float = 1800.0,
) -> ExploreReport:
    """Call ``flow_class`` with ``max_examples`` random callers of up to ``max_steps`` steps each.

    Deterministic for a ``seed``. Synchronous (each call runs on its own event loop); from async
    code use :func:`explore_async`.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    started = time.perf_counter()
    report = ExploreReport(flow_class.__name__, seed=seed, max_steps=max_steps)
    day = today or MONDAY
    named = caller_actions(flow_class)
    step = st.one_of(
        st.sampled_from(named),
        st.text(alphabet=GARBAGE_KEYS, min_size=1, max_size=4).map(lambda keys: "#" + keys),
        st.sampled_from(GARBAGE_TEXT).map(lambda text: BARGE_IN + text),
    )
    tried = hashlib.sha256()
    failed: dict[str, Any] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(step, max_size=max_steps))
    def one_caller(script: list[Action]) -> None:
        if "blocking" in failed:  # flow code that blocks: one finding is enough, and each costs real time
            raise AssertionError(failed["problem"])
        report.examples += 1
        tried.update(repr(script).encode())
        verdict = asyncio.run(judge_call(flow_class, script, today=day, max_simulated_s=max_simulated_s))
        if verdict.blocking is not None:
            failed.update(script=script, problem=verdict.problem, state=verdict.state, blocking=True)
            raise AssertionError(verdict.problem)
        if verdict.problem is not None:
            # Hypothesis replays the shrunk example last, so the last failure kept is the simplest.
            failed.update(script=script, problem=verdict.problem, state=verdict.state)
            raise AssertionError(verdict.problem)

    try:
        one_caller()
    except Exception as exc:  # the assertion above, or Hypothesis saying the failure was flaky
        report.failure = failed.get("problem") or f"{type(exc).__name__}: {exc}"
        report.caller = [shown(action) for action in failed.get("script", [])]
        report.state = failed.get("state")
    report.digest = tried.hexdigest()[:16]
    report.elapsed_s = time.perf_counter() - started
    return report


async def explore_async(flow_class: type[VoiceFlow], **options: Any) -> ExploreReport:
    """:func:`explore` from async code: it runs in a worker thread, each call on that thread's own loop."""
    return await asyncio.to_thread(explore, flow_class, **options)
