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
            result = await line.ended()
        assert result.outcome == "completed"
        assert line.path[-1] == "booked"

Or write scenarios in ``flows/booking.scenarios.yaml`` and run ``voicefsm test flows/booking.py``.
"""

from voicefsm.testing.bridge import (
    BridgeLine,
    BridgeResult,
    BridgeSide,
    BridgeStuckError,
    bridge_flows,
    bridge_servers,
)
from voicefsm.testing.coverage import Coverage, Measure
from voicefsm.testing.explore import ExploreReport, explore
from voicefsm.testing.faults import FaultReport, FaultRun, run_fault_suite, run_fault_suite_async
from voicefsm.testing.line import FlowLine
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
    "load_scenarios",
    "run_fault_suite",
    "run_fault_suite_async",
    "run_scenario",
    "run_scenario_file",
    "scenarios_path_for",
]
