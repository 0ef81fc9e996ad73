"""Random callers (Hypothesis): every shipped flow survives them; planted bugs are found and shrunk."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.configuration
import pytest

from voicefsm.flow import VoiceFlow
from voicefsm.flow.loader import load_flow
from voicefsm.testing import explore, explore_async
from voicefsm.testing.faults import HANG_UP, SILENCE
from voicefsm.testing.random_callers import caller_actions

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "flows").glob("*.py"))
PLANTED = Path(__file__).resolve().parent / "flows" / "planted.py"


def planted(name: str) -> type[VoiceFlow]:
    return load_flow(PLANTED, name)


@pytest.mark.parametrize("flow_file", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_no_random_caller_breaks_a_shipped_flow(flow_file: Path) -> None:
    report = explore(load_flow(flow_file), max_examples=30, max_steps=8)
    assert report.passed, str(report)
    assert report.examples == 30 and report.failure is None and report.caller == []


def test_the_same_seed_tries_the_same_callers_and_another_seed_others() -> None:
    booking = load_flow(REPO / "flows" / "booking.py")
    first = explore(booking, max_examples=12, seed=7)
    again = explore(booking, max_examples=12, seed=7)
    other = explore(booking, max_examples=12, seed=8)
    assert first.digest == again.digest
    assert first.digest != other.digest


def test_a_trap_behind_one_answer_is_found_and_shrunk_to_that_answer() -> None:
    report = explore(planted("HangsUpOnBilling"), max_examples=60, max_simulated_s=600, seed=0)
    assert not report.passed
    assert report.state == "billing"
    assert report.caller == ["billing"]  # the simplest caller who falls in: says billing, then nothing
    # the loop guard (max_same_state) ends it politely; exploring calls that a finding
    assert (report.failure or "").startswith("loops in billing: only a call limit ended it")
    assert "entered billing 11 times in a row (max_same_state = 10)" in (report.failure or "")
    assert "a random caller broke it in billing" in str(report)


def test_a_hang_is_shrunk_to_the_silent_caller_and_a_leak_is_named() -> None:
    hang = explore(planted("GuardedForever"), max_examples=20, max_simulated_s=300)
    assert (hang.passed, hang.state, hang.caller) == (False, "menu", [])
    assert "(says nothing at all)" in str(hang)
    leak = explore(planted("LeakyGreeting"), max_examples=20)
    assert not leak.passed
    assert leak.failure == "left tasks behind: ['forgotten-lookup']"


def test_no_example_database_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a pinned seed and database=None, Hypothesis would save the failing caller there.
    monkeypatch.setattr(hypothesis.configuration, "__hypothesis_home_directory", tmp_path / ".hypothesis")
    report = explore(planted("GuardedForever"), max_examples=5, max_simulated_s=60)
    assert not report.passed  # a failure is what a database would have saved
    assert not (tmp_path / ".hypothesis" / "examples").exists()


def test_the_caller_may_do_anything_the_flow_expects_and_more() -> None:
    actions = caller_actions(load_flow(REPO / "flows" / "booking.py"))
    assert actions[0] == SILENCE and HANG_UP in actions
    assert {"yes", "no", "#1", "#2"} <= set(actions)  # the confirmation's words and keys
    assert any(action.startswith("!") for action in actions)  # talking over a prompt
    assert len(actions) == len(set(actions))


async def test_from_async_code_and_as_json() -> None:
    report = await explore_async(planted("GuardedForever"), max_examples=5, max_simulated_s=60, seed=3)
    data = json.loads(json.dumps(report.to_json()))
    assert data["passed"] is False and data["seed"] == 3 and data["state"] == "menu"
    assert data["caller"] == [] and "still going after 60 simulated seconds" in data["failure"]
