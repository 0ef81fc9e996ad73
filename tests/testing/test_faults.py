"""Generated fault runs: every shipped flow survives them, and each planted bug is found and named."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from voicefsm.core.intents import OutboundItem
from voicefsm.flow import Ask, Hangup, Say, VoiceFlow
from voicefsm.flow.checks import check_flow
from voicefsm.flow.errors import FlowDefinitionError
from voicefsm.flow.kinds import kind_for
from voicefsm.flow.loader import load_flow
from voicefsm.runtime.call import Call
from voicefsm.testing.faults import (
    FAULTS,
    FaultReport,
    find_paths,
    judge_call,
    run_fault_suite,
    run_fault_suite_async,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "flows").glob("*.py"))
PLANTED = Path(__file__).resolve().parent / "flows" / "planted.py"


def planted(name: str) -> type[VoiceFlow]:
    return load_flow(PLANTED, name)


@functools.cache
def shipped_suite(flow_file: Path) -> FaultReport:
    """The whole fault suite of a shipped flow, run once for every test that reads it."""
    return run_fault_suite(load_flow(flow_file))


@pytest.mark.parametrize("flow_file", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_every_shipped_flow_ends_cleanly_whatever_breaks_in_whichever_state(flow_file: Path) -> None:
    flow = load_flow(flow_file)
    report = shipped_suite(flow_file)
    assert report.passed, str(report)
    written = {state.id for state in flow.states if state.id not in flow._default_states}
    assert not report.unreached
    attacks = {s.id: kind_for(s).fault_attacks for s in flow.states}
    assert {(run.state, run.fault) for run in report.runs} == {
        (s, f) for s in written for f in FAULTS if f in attacks[s]
    }
    finals = {state.id for state in flow.states if state.final}
    assert all(run.final_state in finals and run.simulated_s < 1800 for run in report.runs)
    assert report.elapsed_s < 30  # the target is < 10 s a flow; this only catches a runaway


def test_each_fault_really_breaks_what_it_names() -> None:
    report = shipped_suite(REPO / "flows" / "booking.py")
    ended = {run.fault: (run.final_state, run.outcome) for run in report.runs if run.state == "ask_time"}
    assert ended == {
        "disconnected": ("hung_up", "hung_up"),
        "tts_error": ("failed", "error"),
        "stt_error": ("failed", "error"),
        "no_input": ("give_up", "gave_up"),
        "garbage": ("give_up", "gave_up"),
    }
    garbage = next(run for run in report.runs if (run.state, run.fault) == ("confirm", "garbage"))
    assert garbage.path[-2:] == ("confirm", "give_up")  # the nonsense was rejected, not taken as an answer


async def test_paths_are_found_by_running_the_flow() -> None:
    paths = await find_paths(load_flow(REPO / "flows" / "booking.py"))
    assert paths["greet"] == [] and paths["give_up"] == []  # silence alone gets there
    assert len(paths["confirm"]) == 3  # a day, a time, a name
    assert len(paths["booked"]) == 5  # ... and yes twice: the fake calendar has 3 pm taken, so the offer
    verdict = await judge_call(load_flow(REPO / "flows" / "booking.py"), paths["booked"])
    assert verdict.problem is None and verdict.result is not None
    assert verdict.result.final_state == "booked"


def test_the_unbounded_self_loop_is_rejected_statically_and_fails_the_fault_run_naming_the_state() -> None:
    with pytest.raises(FlowDefinitionError, match=r"menu.*loop that no caller input breaks"):

        class UnboundedMenu(VoiceFlow):
            greet = Say("Hello.", initial=True)
            menu = Ask("Billing or support?", retries=0)
            done = Hangup("Bye.")
            spoken = greet.to(menu)
            filled = menu.to(done)
            no_input = menu.to(menu)
            no_match = menu.to(done)

    flow = planted("UnboundedMenu")  # the same flow, built with the static checks skipped
    assert check_flow(flow)  # so the dynamic run has to find the hang on its own
    report = run_fault_suite(flow, max_simulated_s=600)
    assert not report.passed
    assert {(run.state, run.fault) for run in report.failures} == {
        ("greet", "no_input"),
        ("menu", "no_input"),
    }
    # the loop guard (max_same_state = 10) ends each run politely, long before the 600 s bound
    assert all(
        "loops in menu: only a call limit ended it" in (run.problem or "")
        and "entered menu 11 times in a row (max_same_state = 10)" in (run.problem or "")
        for run in report.failures
    )
    assert all(run.simulated_s < 600 and run.final_state == "limit" for run in report.failures)
    assert "menu + no_input: loops in menu: only a call limit ended it" in str(report)


async def test_a_guard_that_never_lets_go_passes_the_static_checks_but_not_the_fault_run() -> None:
    flow = planted("GuardedForever")
    assert check_flow(flow) == []
    report = await run_fault_suite_async(flow, max_simulated_s=300, faults=("no_input", "disconnected"))
    assert [(run.state, run.fault) for run in report.failures] == [
        ("greet", "no_input"),
        ("menu", "no_input"),
    ]


async def test_flow_code_that_waits_for_nothing_is_stopped_at_once_naming_the_state_it_enters() -> None:
    report = await run_fault_suite_async(planted("StuckLookup"), faults=("no_input",))
    [run] = report.failures
    assert run.state == "greet" and run.final_state is None
    assert (run.problem or "").startswith("waits forever in menu (its flow code is still running")
    assert "no timer was pending" in (run.problem or "")
    assert run.simulated_s == 1800  # the clock jumped straight to the bound: no real waiting
    assert report.unreached == ["menu", "done"]  # the call never got past the stuck entry


async def test_a_task_the_flow_forgets_is_caught_and_then_cancelled() -> None:
    before = asyncio.all_tasks()
    report = await run_fault_suite_async(planted("LeakyGreeting"), faults=("disconnected", "no_input"))
    assert {run.problem for run in report.failures} == {"left tasks behind: ['forgotten-lookup']"}
    # every call that entered the menu leaks, however it ended; hanging up in greet never gets there
    assert {(run.state, run.fault) for run in report.failures} == {
        ("greet", "no_input"),
        ("menu", "disconnected"),
        ("menu", "no_input"),
        ("done", "disconnected"),
        ("done", "no_input"),
    }
    assert not [task for task in asyncio.all_tasks() - before if not task.done()]


async def test_a_state_no_caller_reaches_is_reported_with_the_spec_path_that_should() -> None:
    report = await run_fault_suite_async(planted("SecretRoom"), faults=("disconnected",))
    assert not report.passed and not report.failures
    assert report.unreached == ["vip"]
    assert report.unreached_why["vip"] == (
        "the spec reaches it by greet -spoken-> menu -filled [is_vip]-> vip, but no answer tried got there"
    )
    assert "vip: no caller behaviour reaches it" in str(report)
    assert {run.state for run in report.runs} == {"greet", "menu", "done"}


def test_the_report_as_json_and_on_a_rich_console_names_state_and_fault() -> None:
    report = run_fault_suite(planted("GuardedForever"), max_simulated_s=120, faults=("no_input", "tts_error"))
    data = json.loads(json.dumps(report.to_json()))
    assert data["passed"] is False and data["runs"] == 6 and data["states"] == 3
    assert data["faults"] == ["no_input", "tts_error"]
    [first, second] = data["failures"]
    assert (first["state"], first["fault"], second["state"], second["fault"]) == (
        "greet",
        "no_input",
        "menu",
        "no_input",
    )
    assert first["caller"] == [] and first["final_state"] == "limit" and "in menu" in first["problem"]
    assert {(row["state"], row["fault"]) for row in data["results"] if row["ok"]} == {
        ("greet", "tts_error"),
        ("menu", "tts_error"),
        ("done", "no_input"),
        ("done", "tts_error"),
    }
    console = Console(record=True, width=200, color_system=None)
    console.print(report)
    shown = console.export_text()
    assert "GuardedForever: 6 fault runs over 3 states: FAILED" in shown
    assert "menu + no_input: loops in menu: only a call limit ended it" in shown
    assert "(the caller says nothing from then on; reached by: no answer at all)" in shown


async def test_a_call_whose_outbound_queue_never_closes_on_hang_up_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    booking = load_flow(REPO / "flows" / "booking.py")
    clean = await judge_call(booking, [])
    assert clean.problem is None and clean.result is not None and clean.result.final_state == "give_up"

    real_next_outbound = Call.next_outbound

    async def never_says_the_call_ended(self: Call) -> OutboundItem | None:
        # A regression in Call: the transport is never told the call ended, so its pump waits on.
        item = await real_next_outbound(self)
        while item is None:
            await asyncio.Event().wait()
        return item

    monkeypatch.setattr(Call, "next_outbound", never_says_the_call_ended)
    before = asyncio.all_tasks()
    verdict = await judge_call(booking, [])
    assert verdict.result is not None and verdict.result.final_state == "give_up"
    assert verdict.problem == (
        "the outbound queue was never closed (the transport still waits for agent audio)"
    )
    assert not [task for task in asyncio.all_tasks() - before if not task.done()]  # and it was cleaned up


def test_a_callback_that_blocks_fails_the_fault_runs_quickly_naming_it_and_its_line() -> None:
    started = time.perf_counter()
    report = run_fault_suite(planted("SlowHook"))
    assert time.perf_counter() - started < 20  # the hook sleeps 3 s; the suite stops at the first finding
    [run] = report.failures
    assert (run.state, run.fault) == ("menu", "none")
    assert "SlowHook.menu: on_enter_menu (" in (run.problem or "")
    assert "planted.py:" in (run.problem or "") and "blocked for more than 50 ms" in (run.problem or "")
    assert "belongs in a Do step" in (run.problem or "")
