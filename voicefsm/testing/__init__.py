"""The public test kit for flow authors: scripted callers, scenario files, coverage, fault runs.

Run a flow in-process through the real runtime on a virtual clock (no real waiting for timers)::

    from voicefsm.testing import FlowLine

    async def test_books_a_tuesday():
        async with FlowLine(Booking) as line:
            await line.heard("Which day")
            await line.answer("next Tuesday")
            await line.answer("half past ten")
            await line.answer("Ada Lovelace")
            await line.keys("1")
            await line.ended()
        line.assert_outcome("completed")
        line.assert_path("greet", "ask_day", "ask_time", "ask_name", "confirm", "booked")
        line.assert_slots(time="10:30")

Or write scenarios in ``flows/booking.scenarios.yaml`` and run ``voicefsm test flows/booking.py``.

The names below are imported on first use, so that importing the pytest plugin (which every
pytest run does once it is installed) does not load the runtime, the bridge or hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicefsm.testing.bridge import (
        BridgeLine,
        BridgeResult,
        BridgeSide,
        BridgeStuckError,
        CallerScript,
        bridge_flows,
        bridge_servers,
    )
    from voicefsm.testing.coverage import Coverage, Measure
    from voicefsm.testing.faults import FaultReport, FaultRun, run_fault_suite, run_fault_suite_async
    from voicefsm.testing.line import FlowLine
    from voicefsm.testing.random_callers import ExploreReport, explore, explore_async
    from voicefsm.testing.scenarios import (
        Scenario,
        ScenarioFile,
        ScenarioFileError,
        ScenarioReport,
        ScenarioResult,
        load_scenarios,
        run_scenario,
        run_scenario_file,
        scenarios_path_for,
    )

__all__ = [
    "BridgeLine",
    "BridgeResult",
    "BridgeSide",
    "BridgeStuckError",
    "CallerScript",
    "Coverage",
    "ExploreReport",
    "FaultReport",
    "FaultRun",
    "FlowLine",
    "Measure",
    "Scenario",
    "ScenarioFile",
    "ScenarioFileError",
    "ScenarioReport",
    "ScenarioResult",
    "bridge_flows",
    "bridge_servers",
    "explore",
    "explore_async",
    "load_scenarios",
    "run_fault_suite",
    "run_fault_suite_async",
    "run_scenario",
    "run_scenario_file",
    "scenarios_path_for",
]

_MODULE_OF = {
    "BridgeLine": "bridge",
    "BridgeResult": "bridge",
    "BridgeSide": "bridge",
    "BridgeStuckError": "bridge",
    "CallerScript": "bridge",
    "bridge_flows": "bridge",
    "bridge_servers": "bridge",
    "Coverage": "coverage",
    "Measure": "coverage",
    "ExploreReport": "random_callers",
    "explore": "random_callers",
    "explore_async": "random_callers",
    "FaultReport": "faults",
    "FaultRun": "faults",
    "run_fault_suite": "faults",
    "run_fault_suite_async": "faults",
    "FlowLine": "line",
    "Scenario": "scenarios",
    "ScenarioFile": "scenarios",
    "ScenarioFileError": "scenarios",
    "ScenarioReport": "scenarios",
    "ScenarioResult": "scenarios",
    "load_scenarios": "scenarios",
    "run_scenario": "scenarios",
    "run_scenario_file": "scenarios",
    "scenarios_path_for": "scenarios",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'voicefsm.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"voicefsm.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
