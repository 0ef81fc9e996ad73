"""``voicefsm test`` as a user runs it: a subprocess, a readable report, an exit code, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def voicefsm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefsm", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_booking_line_passes_with_full_transition_coverage() -> None:
    done = voicefsm("test", "flows/booking.py", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["transitions"]["covered"] == report["transitions"]["total"] >= 14
    assert report["transitions"]["uncovered"] == []
    for measure in ("states", "events", "prompts"):
        assert report[measure]["covered"] == report[measure]["total"]
    assert all(scenario["passed"] for scenario in report["scenarios"])


def test_a_failing_scenario_exits_1_naming_scenario_step_and_what_was_missing(tmp_path: Path) -> None:
    scenarios = tmp_path / "wrong.scenarios.yaml"
    scenarios.write_text(
        "scenarios:\n  - name: hopes for a Saturday\n    steps:\n      - say: Saturday\n"
        "      - agent: What time on Saturday?\n"
        "  - name: hopes for a pattern\n    steps:\n      - agent: {re: '[bold]at [0-9]+ on Sunday'}\n"
    )
    done = voicefsm("test", "flows/booking.py", "--scenarios", str(scenarios))
    assert done.returncode == 1
    assert "FAIL hopes for a Saturday at step 2 (agent: 'What time on Saturday?')" in done.stdout
    assert "caller: Saturday" in done.stdout
    assert "FAIL hopes for a pattern at step 1 (agent: /[bold]at [0-9]+ on Sunday/)" in done.stdout
    assert "0/2 scenarios passed" in done.stdout
    assert "not covered: ask_time -filled-> ask_name" in done.stdout


def test_a_bad_scenario_file_is_explained(tmp_path: Path) -> None:
    scenarios = tmp_path / "bad.scenarios.yaml"
    scenarios.write_text("scenarios:\n  - name: a\n    steps: [shout]\n")
    done = voicefsm("test", "flows/booking.py", "--scenarios", str(scenarios))
    assert done.returncode == 1
    assert f"{scenarios}: not a valid scenario file" in done.stderr
    assert "scenario 'a', step 1: 'shout' is not a step" in done.stderr

    missing = voicefsm("test", "flows/booking.py", "--scenarios", str(tmp_path / "gone.yaml"), "--faults")
    assert missing.returncode == 1
    assert f"no such scenario file: {tmp_path / 'gone.yaml'}" in missing.stderr


def test_a_flow_without_scenarios_says_where_they_go(tmp_path: Path) -> None:
    flow = tmp_path / "mine.py"
    flow.write_text((REPO / "flows" / "echo.py").read_text())
    done = voicefsm("test", str(flow))
    assert done.returncode == 1
    assert f"expected {tmp_path / 'mine.scenarios.yaml'}" in done.stderr


PLANTED_HANG = """
from voicefsm.flow import Ask, Choice, Hangup, Say, VoiceFlow


MENU = Choice({"billing": [], "support": []})


class EndlessMenu(VoiceFlow):
    greet = Say("Hello.", initial=True)
    # a long timer: the same hang as flows/planted.py in a tenth of the simulated steps
    menu = Ask("Billing or support?", expect=MENU, retries=0, no_input_s=300)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(menu, cond="still_there") | menu.to(done)
    no_match = menu.to(done)

    def still_there(self) -> bool:
        return True
"""


def test_faults_pass_for_the_menu_and_fail_for_a_planted_hang_naming_the_state(tmp_path: Path) -> None:
    done = voicefsm("test", "flows/ivr_menu.py", "--faults", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["faults"]["passed"] and report["explore"]["passed"]
    assert report["faults"]["runs"] == 8 * 5
    assert report["transitions"]["covered"] == report["transitions"]["total"]

    flow = tmp_path / "planted.py"
    flow.write_text(PLANTED_HANG)
    planted = voicefsm("test", f"{flow}:EndlessMenu", "--faults")
    assert planted.returncode == 1
    assert "menu + no_input: still going after 6" in planted.stdout  # the flow's max_duration_s: 600 s
    assert "in menu, when the flow's max_duration_s ended it" in planted.stdout
    assert "a random caller broke it" in planted.stdout


def test_a_scenario_file_picks_the_flow_of_a_file_with_several(tmp_path: Path) -> None:
    flow = tmp_path / "two.py"
    flow.write_text(
        "from voicefsm.flow import Hangup, Say, VoiceFlow\n\n\n"
        "class First(VoiceFlow):\n"
        "    hello = Say('First.', initial=True)\n    bye = Hangup('Bye.')\n    spoken = hello.to(bye)\n\n\n"
        "class Second(VoiceFlow):\n"
        "    hello = Say('Second.', initial=True)\n    bye = Hangup('Bye.')\n    spoken = hello.to(bye)\n"
    )
    (tmp_path / "two.scenarios.yaml").write_text(
        "flow: Second\nscenarios:\n  - name: says its name\n"
        "    steps: [{agent: Second.}]\n    expect: {outcome: completed, said: [Second., Bye.]}\n"
    )
    done = voicefsm("test", str(flow), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["flow"] == "Second"
    assert report["transitions"] == {"covered": 1, "total": 1, "percent": 100.0, "uncovered": []}
