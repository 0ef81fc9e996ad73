"""A state kind defined outside voicefsm (tests/kinds/hold.py) runs end to end through the public seam:
validate, spec, graph, the test line, piped `voicefsm chat`, scenarios and the fault runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voicefsm.flow import FlowDefinitionError, FlowSpec, Hangup, Say, VoiceFlow, check_flow, load_flow
from voicefsm.flow.graph import dot
from voicefsm.testing import load_scenarios, run_scenario_file
from voicefsm.testing.faults import run_fault_suite_async
from voicefsm.testing.line import FlowLine

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLOW_FILE = HERE / "hold.py"
HoldLine = load_flow(str(FLOW_FILE))  # loaded as a user's flow file is
Hold = sys.modules[HoldLine.__module__].Hold


def test_validate_spec_and_graph_see_the_kind() -> None:
    assert check_flow(HoldLine) == []
    spec = FlowSpec.of(HoldLine)
    hold = spec.state("hold")
    assert hold.kind == "hold"
    assert hold.receives == [
        "waited",
        "skipped",
        "disconnected",
        "error.execution",
        "limit_reached",
        "machine_answered",
    ]
    assert hold.extra == {"seconds": 4.0}
    assert hold.prompt == "Please hold."
    assert '"hold" [label="hold\\n«hold»", shape=octagon];' in dot(HoldLine)


def test_a_missing_exit_of_the_kinds_own_event_is_reported_with_the_fix() -> None:
    with pytest.raises(FlowDefinitionError) as info:

        class Unfinished(VoiceFlow):
            greet = Say("Hi.", initial=True)
            hold = Hold("Please hold.", seconds=0)
            bye = Hangup("Bye.")
            spoken = greet.to(hold)
            waited = hold.to(bye)

    text = str(info.value)
    assert "Unfinished.hold can wait forever: no transition on skipped" in text
    assert "add `skipped = hold.to(next_state)`" in text
    assert "Unfinished.hold has seconds=0" in text


async def test_the_kind_runs_on_the_test_line_by_its_own_timer_and_keys() -> None:
    async with FlowLine(HoldLine) as line:
        await line.heard("Please hold.")
        await line.listening("confirm")
        assert line.transitions[2] == ("hold", "waited", "confirm")
        assert line.clock.now() >= 4.0
        line.say("yes")
        await line.ended()
    line.assert_path("greet", "hold", "confirm", "bye")

    async with FlowLine(HoldLine) as line:
        await line.keys("#")
        await line.listening("confirm")
        line.hang_up()
        await line.ended()
    assert ("hold", "skipped", "confirm") in line.transitions


async def test_scenarios_and_fault_runs_cover_the_kind() -> None:
    path = HERE / "hold.scenarios.yaml"
    report = await run_scenario_file(HoldLine, load_scenarios(path), path)
    assert report.passed
    assert report.coverage.transitions.uncovered == ()
    faults = await run_fault_suite_async(HoldLine)
    assert faults.passed, str(faults)
    assert {run.fault for run in faults.runs if run.state == "hold"} == {"disconnected"}


def voicefsm(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefsm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_piped_chat_and_the_test_command_run_the_kind() -> None:
    chat = voicefsm("chat", str(FLOW_FILE), stdin="/silence\nyes\n")
    assert chat.returncode == 0, chat.stderr
    assert "agent: Please hold." in chat.stdout
    assert "-> confirm (waited)" in chat.stdout
    assert "call ended: completed in bye" in chat.stdout
    tested = voicefsm("test", str(FLOW_FILE), "--faults")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "HoldLine: 16 fault runs over 4 states: passed" in tested.stdout
