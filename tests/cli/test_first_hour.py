"""The edges a new user meets first: `voicefsm new`, folders, one-line errors, plain help, counts.

Every command runs as a subprocess in a temporary directory, bounded by a timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from voicefsm.cli import flow_counts
from voicefsm.flow.loader import load_flow
from voicefsm.flow.spec import FlowSpec
from voicefsm.testing import Coverage

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows"
TIMEOUT_S = 120


def voicefsm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``voicefsm ARGS`` with no credentials in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ELEVENLABS_", "AZURE_"))}
    return subprocess.run(
        [sys.executable, "-m", "voicefsm", *args],
        cwd=cwd,
        env={**env, "COLUMNS": "100"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "frozen" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_new_writes_a_project_whose_scenarios_and_pytest_pass(tmp_path: Path) -> None:
    made = voicefsm("new", "front-desk", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "front-desk"
    assert sorted(path.name for path in project.iterdir()) == [
        "README.md",
        "front_desk.py",
        "front_desk.scenarios.yaml",
        "test_front_desk.py",
    ]
    tested = voicefsm("test", ".", cwd=project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "6/6 scenarios passed" in tested.stdout and "1 of 1 flows in . passed" in tested.stdout
    assert voicefsm("validate", "front_desk.py", cwd=project).stdout.startswith("ok FrontDesk")
    # pytest in the folder, as a user runs it: no pytest-asyncio configuration, no conftest.
    pytest_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    assert "2 passed" in pytest_run.stdout


def test_new_refuses_a_folder_with_files_and_a_name_that_is_no_module(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_one_line_error(voicefsm("new", "busy", cwd=tmp_path), "already has files in it")
    assert_one_line_error(voicefsm("new", "9lives", cwd=tmp_path), "start it with a letter")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_validate_and_test_take_a_folder_with_a_result_per_flow(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("booking.py", "booking.scenarios.yaml", "echo.py", "echo.scenarios.yaml"):
        (folder / name).write_text((FLOWS / name).read_text())
    (folder / "broken.py").write_text("from voicefsm.flow import Say\nx = (\n")
    (folder / "test_not_a_flow.py").write_text("raise RuntimeError('tests are not imported')\n")
    checked = voicefsm("validate", "flows", cwd=tmp_path)
    assert checked.returncode == 1
    assert (
        "ok Booking (flows/booking.py)" in checked.stdout and "ok EchoTest (flows/echo.py)" in checked.stdout
    )
    assert "2 of 3 checked in flows valid" in checked.stdout
    assert checked.stderr.strip() == (
        "error: flows/broken.py:2: SyntaxError: '(' was never closed (loading the flow from "
        "flows/broken.py); fix the syntax there"
    )
    (folder / "broken.py").unlink()
    (folder / "survey.py").write_text((FLOWS / "survey.py").read_text())  # no scenario file beside it
    assert voicefsm("validate", "flows", cwd=tmp_path).returncode == 0
    tested = voicefsm("test", "flows", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "flows/booking.py" in tested.stdout and "flows/echo.py" in tested.stdout
    assert "no scenario file beside survey.py: not tested" in tested.stdout
    assert "2 of 2 flows in flows passed" in tested.stdout


def test_a_flow_with_a_syntax_error_or_a_folder_for_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text("from voicefsm.flow import VoiceFlow\nclass Empty(VoiceFlow:\n")
    for command in ("validate", "chat", "graph", "test"):
        assert_one_line_error(voicefsm(command, "typo.py", cwd=tmp_path), "typo.py:2: SyntaxError")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "main.py").write_text("x = 1\n")
    for command in ("chat", "graph"):
        assert_one_line_error(
            voicefsm(command, "flows", cwd=tmp_path), "it is a folder, not a flow file", "flows/main.py"
        )


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = voicefsm("serve", str(FLOWS / "echo.py"), "--port", str(port), cwd=tmp_path)
    assert_one_line_error(done, f"127.0.0.1:{port}", "in use", f"--port {port + 1}")
    assert done.returncode == 2


def test_graph_writes_mermaid_to_stdout_without_an_output(tmp_path: Path) -> None:
    done = voicefsm("graph", str(FLOWS / "booking.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stateDiagram-v2") and "ask_day" in done.stdout
    assert not list(tmp_path.glob("*.mmd"))


@pytest.mark.parametrize("command", ["serve", "chat", "validate", "graph", "test", "call", "new"])
def test_help_shows_no_type_noise_after_flags(command: str, tmp_path: Path) -> None:
    done = voicefsm(command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "<bool>" not in done.stdout and "--help" in done.stdout


def test_a_scenario_file_error_lists_the_step_names(tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text((FLOWS / "echo.py").read_text())
    (tmp_path / "echo.scenarios.yaml").write_text(
        "scenarios:\n  - name: typo\n    steps:\n      - sya: hello\n      - silence: 6\n"
    )
    done = voicefsm("test", "echo.py", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "step 1, sya: no such step; a step is one of agent, say, press, silence" in done.stderr
    assert "step 2, silence: takes no value: write it alone, as '- silence'" in done.stderr


@pytest.mark.parametrize("flow_file", sorted(FLOWS.glob("*.py")), ids=lambda path: path.name)
def test_validate_counts_what_coverage_counts(flow_file: Path) -> None:
    flow = load_flow(flow_file)
    counts = flow_counts(flow)
    coverage = Coverage(FlowSpec.of(flow))
    assert counts["states"] == coverage.states.total
    assert counts["transitions"] == coverage.transitions.total
