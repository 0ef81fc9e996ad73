"""Generated fault runs and random callers: every shipped flow survives them; planted bugs do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicefsm.flow.loader import load_flow
from voicefsm.testing import explore, run_fault_suite_async
from voicefsm.testing.faults import FAULTS, find_paths

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "flows").glob("*.py"))
BUGGY = Path(__file__).resolve().parent / "buggy_flows" / "planted.py"


@pytest.mark.parametrize("flow_file", SHIPPED, ids=[path.stem for path in SHIPPED])
async def test_every_shipped_flow_ends_cleanly_whatever_breaks_in_whichever_state(flow_file: Path) -> None:
    report = await run_fault_suite_async(load_flow(flow_file))
    assert report.passed, str(report)
    written = {state.id for state in load_flow(flow_file).states if state.id not in ("hung_up", "failed")}
    assert {run.state for run in report.runs} == written
    assert len(report.runs) == len(written) * len(FAULTS)


async def test_paths_are_found_by_running_the_flow() -> None:
    paths = await find_paths(load_flow(REPO / "flows" / "booking.py"))
    assert paths["greet"] == []
    assert len(paths["confirm"]) == 3  # a day, a time, a name
    assert len(paths["booked"]) == 4


async def test_a_loop_whose_guard_never_lets_go_fails_naming_the_state() -> None:
    report = await run_fault_suite_async(load_flow(BUGGY, "EndlessMenu"), max_simulated_s=600)
    assert not report.passed
    failed = {(run.state, run.fault) for run in report.failures}
    assert ("menu", "no_input") in failed
    assert all(
        "still going after 600 simulated seconds, in menu" in (run.problem or "") for run in report.failures
    )
    assert "menu + no_input: still going" in str(report)


async def test_a_task_the_flow_forgets_is_caught() -> None:
    before = asyncio.all_tasks()
    try:
        report = await run_fault_suite_async(load_flow(BUGGY, "LeakyGreeting"), faults=("disconnected",))
    finally:
        for task in asyncio.all_tasks() - before:
            if task.get_name() == "forgotten-lookup":
                task.cancel()
    assert {run.problem for run in report.failures} == {"left tasks behind: ['forgotten-lookup']"}
    assert {run.state for run in report.failures} == {"menu", "done"}  # every call that went through menu


def test_random_callers_cannot_break_the_booking_line_and_do_break_the_endless_menu() -> None:
    assert explore(load_flow(REPO / "flows" / "booking.py"), max_examples=25).passed
    broken = explore(load_flow(BUGGY, "EndlessMenu"), max_examples=25, max_simulated_s=600)
    assert not broken.passed
    assert "in menu" in (broken.failure or "")
    assert broken.caller == []  # shrunk to the simplest caller: one who says nothing
