"""Loading flows from files and modules, as the CLI does."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicefsm.flow import FlowDefinitionError, FlowLoadError
from voicefsm.flow.loader import load_flow

TWO_FLOWS = """
from voicefsm.flow import Hangup, Say, VoiceFlow

class First(VoiceFlow):
    greet = Say("One.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)

class Second(VoiceFlow):
    greet = Say("Two.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)
"""

BROKEN = """
from voicefsm.flow import Ask, Hangup, VoiceFlow, YesNo

class Broken(VoiceFlow):
    ask = Ask("Yes?", expect=YesNo(), initial=True)
    bye = Hangup("Bye.")
    filled = ask.to(bye)
"""


def test_a_file_with_one_flow() -> None:
    flow = load_flow("flows/booking.py")
    assert flow.__name__ == "Booking"
    assert load_flow("flows/booking.py:Booking") is not None
    assert load_flow(Path("flows/survey.py"), flow="Survey").__name__ == "Survey"


def test_several_flows_need_a_choice(tmp_path: Path) -> None:
    path = tmp_path / "desk.py"
    path.write_text(TWO_FLOWS)
    with pytest.raises(FlowLoadError, match=r"several flows \(First, Second\); pick one with --flow First"):
        load_flow(path)
    assert load_flow(path, flow="Second").__name__ == "Second"
    assert load_flow(f"{path}:First").__name__ == "First"
    with pytest.raises(FlowLoadError, match="no flow class 'Third'; it defines First, Second"):
        load_flow(path, flow="Third")


def test_a_module_path_works_too() -> None:
    with pytest.raises(FlowLoadError, match="defines no VoiceFlow subclass"):
        load_flow("voicefsm.flow.chart")
    with pytest.raises(FlowLoadError, match="no such file or module"):
        load_flow("no_such_package.flows")


def test_files_that_do_not_load_say_why(tmp_path: Path) -> None:
    with pytest.raises(FlowLoadError, match="no such file"):
        load_flow(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nraise RuntimeError('boom at import')\n")
    with pytest.raises(FlowLoadError) as raised:
        load_flow(bad)
    assert str(raised.value).startswith(f"{bad}:2: RuntimeError: boom at import")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("x = 1\nclass (:\n")
    with pytest.raises(FlowLoadError) as raised:
        load_flow(syntax)
    assert str(raised.value).startswith(f"{syntax}:2: SyntaxError: ")
    assert "frozen" not in str(raised.value) and raised.value.__cause__ is None


def test_an_import_error_names_the_users_line_not_the_import_machinery(tmp_path: Path) -> None:
    helper = tmp_path / "helper.py"
    helper.write_text("def compute():\n    return 1 / 0\n")
    flow = tmp_path / "uses_helper.py"
    flow.write_text(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport helper\nhelper.compute()\n")
    with pytest.raises(FlowLoadError) as raised:
        load_flow(flow)
    assert str(raised.value).startswith(f"{flow}:4: ZeroDivisionError: division by zero")
    missing = tmp_path / "missing_import.py"
    missing.write_text("import no_such_module_anywhere\n")
    with pytest.raises(
        FlowLoadError, match=r"missing_import.py:1: ModuleNotFoundError: .*install the missing"
    ):
        load_flow(missing)


def test_a_folder_where_a_file_is_expected_names_a_file_in_it(tmp_path: Path) -> None:
    (tmp_path / "greeter.py").write_text("x = 1\n")
    with pytest.raises(
        FlowLoadError, match=r"it is a folder, not a flow file; name a file in it, e.g. .*greeter.py"
    ):
        load_flow(tmp_path)


def test_an_unsound_flow_file_reports_its_problems_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    with pytest.raises(FlowDefinitionError) as raised:
        load_flow(path)
    assert {(p.state, p.event) for p in raised.value.problems} == {("ask", "no_input"), ("ask", "no_match")}
    assert str(raised.value.problems[0]).startswith(f"{path}:5: Broken.ask can wait forever")
