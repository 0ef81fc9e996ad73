"""Readable reports of scenario runs, coverage and fault runs, on a rich console."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from voicefsm.testing.coverage import Measure
from voicefsm.testing.faults import FaultReport
from voicefsm.testing.random_callers import ExploreReport
from voicefsm.testing.scenarios import ScenarioReport


def print_scenarios(console: Console, report: ScenarioReport) -> None:
    """Each scenario (with the transcript of a failed one), then coverage with what is missing."""
    console.print(f"[bold]{escape(report.flow)}[/] — {escape(str(report.path))}")
    for result in report.results:
        if result.passed:
            console.print(f"  [green]pass[/] {escape(result.name)}")
            continue
        console.print(
            f"  [red]FAIL[/] {escape(result.name)}"
            + (f" at {escape(result.failed_step)}" if result.failed_step else "")
        )
        for problem in result.problems:
            console.print(f"       {escape(problem)}")
        console.print(f"       path: {escape(' -> '.join(result.path)) or '(none)'}")
        for speaker, text in result.transcript[-6:]:
            console.print(f"       {speaker}: {escape(text)}", style="dim")
    passed = sum(result.passed for result in report.results)
    colour = "green" if report.passed else "red"
    console.print(f"[{colour}]{passed}/{len(report.results)} scenarios passed[/]")
    coverage = report.coverage
    for name, measure in (
        ("transitions", coverage.transitions),
        ("states", coverage.states),
        ("events", coverage.events),
        ("prompts", coverage.prompts),
        ("steps", coverage.steps),
    ):
        if measure.total or name != "steps":
            _print_measure(console, name, measure)


def _print_measure(console: Console, name: str, measure: Measure) -> None:
    colour = "green" if measure.covered == measure.total else "yellow"
    console.print(f"  {name:<12} [{colour}]{measure.covered}/{measure.total} ({measure.percent:.0f}%)[/]")
    for item in measure.uncovered:
        console.print(f"      not covered: {escape(item)}", style="yellow")


def print_faults(console: Console, faults: FaultReport, explored: ExploreReport) -> None:
    """The fault runs and the random callers, naming state and fault of every failure."""
    colour = "green" if faults.passed else "red"
    console.print(f"[{colour}]{escape(str(faults))}[/]")
    colour = "green" if explored.passed else "red"
    console.print(f"[{colour}]{escape(str(explored))}[/]")
