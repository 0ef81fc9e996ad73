"""Scenario files: the schema's errors name file, scenario and step; runs report and cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicefsm.flow.loader import load_flow
from voicefsm.testing import ScenarioFileError, load_scenarios, run_scenario_file, scenarios_path_for

FLOWS = Path(__file__).resolve().parents[2] / "flows"
LOOKUP = Path(__file__).resolve().parent / "flows" / "lookup.py"
SHIPPED = sorted(path for path in FLOWS.glob("*.py") if scenarios_path_for(path).exists())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flow.scenarios.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("flow_file", SHIPPED, ids=[path.stem for path in SHIPPED])
async def test_every_shipped_flow_passes_its_scenarios_with_full_transition_coverage(flow_file: Path) -> None:
    path = scenarios_path_for(flow_file)
    report = await run_scenario_file(load_flow(flow_file), load_scenarios(path), path)
    failures = [(r.name, r.failed_step, r.problems) for r in report.results if not r.passed]
    assert failures == []
    for measure in (report.coverage.transitions, report.coverage.states, report.coverage.events):
        assert (measure.covered, measure.uncovered) == (measure.total, ())


def test_every_shipped_flow_has_scenarios() -> None:
    flows = {path.stem for path in FLOWS.glob("*.py")}
    assert flows == {path.stem for path in SHIPPED}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios: []", "scenarios: List should have at least 1 item"),
        ("scenarios:\n  - name: a\n    steps: [shout]", "scenario 'a', step 1: 'shout' is not a step"),
        (
            "scenarios:\n  - name: a\n    steps:\n      - say: hi\n      - {say: hi, press: '1'}",
            "scenario 'a', step 2: a step does exactly one thing; this one sets say, press",
        ),
        (
            "scenarios:\n  - name: a\n    steps: [{press: '12x'}]",
            "scenario 'a', step 1, press: String should match",
        ),
        ("scenarios:\n  - name: a\n    steps: [{agent: {re: '('}}]", "is not a regular expression"),
        ("scenarios:\n  - {name: a}\n  - {name: a}", "scenario names must be unique; repeated: a"),
        ("scenarios:\n  - name: a\n    expect: {outcom: done}", "scenario 'a', expect.outcom: Extra inputs"),
        ("scenarios: [", "not YAML"),
    ],
)
def test_a_bad_file_is_explained(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioFileError) as caught:
        load_scenarios(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_unquoted_times_and_keys_reach_the_flow_as_written(tmp_path: Path) -> None:
    steps = "[{say: 10:30}, {press: 0123}, {barge_in: 1:45}]"
    path = write(tmp_path, f"scenarios:\n  - name: a\n    steps: {steps}")
    steps = load_scenarios(path).scenarios[0].steps
    assert [(step.say, step.press, step.barge_in) for step in steps] == [
        ("10:30", None, None),
        (None, "0123", None),
        (None, None, "1:45"),
    ]


def test_unquoted_yes_no_and_numbers_mean_the_words(tmp_path: Path) -> None:
    path = write(tmp_path, "scenarios:\n  - name: a\n    steps: [{say: yes}, {say: no}, {press: 1}]")
    steps = load_scenarios(path).scenarios[0].steps
    assert [(step.say, step.press) for step in steps] == [("yes", None), ("no", None), (None, "1")]


async def test_a_failing_scenario_names_its_step_and_the_others_still_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
today: 2024-06-03
scenarios:
  - name: expects the wrong prompt
    steps:
      - say: Friday
      - agent: What day of the week
  - name: expects the wrong ending
    steps: [silence, silence, silence]
    expect: {outcome: completed, path: [greet, ask_day, booked]}
  - name: passes
    steps: [hangup]
    expect: {outcome: hung_up}
""",
    )
    flow = load_flow(FLOWS / "booking.py")
    report = await run_scenario_file(flow, load_scenarios(path), path)
    wrong_prompt, wrong_end, passes = report.results
    assert not report.passed
    assert wrong_prompt.failed_step == "step 2 (agent: 'What day of the week')"
    assert (
        "the call ended while waiting for the agent to say 'What day of the week'" in wrong_prompt.problems[0]
    )
    assert wrong_end.problems == [
        "outcome: expected 'completed', got 'gave_up'",
        "path: expected greet -> ask_day -> booked, got greet -> ask_day -> give_up",
    ]
    assert passes.passed
    assert report.coverage.transitions.covered < report.coverage.transitions.total
    assert "ask_time -filled-> ask_name" in report.coverage.transitions.uncovered


async def test_scenarios_stub_a_steps_result_failure_and_delay_and_coverage_counts_step_outcomes() -> None:
    path = scenarios_path_for(LOOKUP)
    report = await run_scenario_file(load_flow(LOOKUP), load_scenarios(path), path)
    assert [(r.name, r.problems) for r in report.results if not r.passed] == []
    slow = next(r for r in report.results if r.name.startswith("a slow order system"))
    assert slow.path[-2:] == ["find", "failed"]  # timed out at 5 s, after the filler (the stub takes 12)
    assert report.coverage.steps.total == 4  # found, missing, failure, timed_out
    assert report.coverage.steps.uncovered == ()


async def test_a_stub_for_a_step_the_flow_does_not_have_names_the_steps_it_has(tmp_path: Path) -> None:
    path = write(tmp_path, "scenarios:\n  - name: typo\n    steps:\n      - step: {fnd: found}\n")
    report = await run_scenario_file(load_flow(LOOKUP), load_scenarios(path), path)
    [result] = report.results
    assert result.problems == ["Lookup has no step 'fnd'; its steps (Do states) are find (find_order)"]
    assert result.failed_step == "step 1 (step: fnd -> returns 'found')"
