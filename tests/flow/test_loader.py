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
    with pytest.raises(FlowLoadError, match=r"raised RuntimeError at bad.py:2: boom at import"):
        load_flow(bad)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("class (:\n")
    with pytest.raises(FlowLoadError, match="SyntaxError"):
        load_flow(syntax)


def test_an_unsound_flow_file_reports_its_problems_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    with pytest.raises(FlowDefinitionError) as raised:
        load_flow(path)
    assert {(p.state, p.event) for p in raised.value.problems} == {("ask", "no_input"), ("ask", "no_match")}
    assert str(raised.value.problems[0]).startswith(f"{path}:5: Broken.ask can wait forever")
