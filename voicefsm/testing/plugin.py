"""pytest plugin: fixtures for testing flows (registered through the ``pytest11`` entry point).

    async def test_books_a_tuesday(flow_line):
        async with flow_line(Booking) as line:
            await line.heard("Which day")
            await line.answer("next Tuesday")
            ...
            await line.ended()
        line.assert_outcome("completed")

    def test_no_state_strands_a_caller(assert_no_hang):
        assert_no_hang(Booking)

``async def`` tests run as they are written, with no configuration: when no async plugin
(pytest-asyncio, anyio) has claimed a coroutine test, this plugin runs it in a fresh event loop.

Every pytest run imports this module once the package is installed, so it imports nothing of
voicefsm at import time: the runtime is loaded by the first test that asks for a fixture.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from voicefsm.flow.chart import VoiceFlow
    from voicefsm.testing.line import FlowLine


_ASYNC_MARKERS = ("asyncio", "anyio", "trio")


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that no async plugin claimed (pytest alone refuses them)."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test) or any(
        pyfuncitem.get_closest_marker(name) for name in _ASYNC_MARKERS
    ):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(test(**arguments))
    return True


@pytest.fixture
def flow_line() -> Callable[..., FlowLine]:
    """A factory of in-process lines: ``flow_line(FlowClass, today=..., caller=...)``."""
    from voicefsm.testing.line import MONDAY, FlowLine

    def make(flow: type[VoiceFlow] | VoiceFlow, *, today: dt.date = MONDAY, **options: Any) -> FlowLine:
        return FlowLine(flow, today=today, **options)

    return make


@pytest.fixture
def assert_no_hang() -> Callable[..., None]:
    """``assert_no_hang(FlowClass)`` in a plain (not async) test: every generated fault run passes."""
    from voicefsm.testing.faults import run_fault_suite

    def check(flow: type[VoiceFlow], **options: Any) -> None:
        report = run_fault_suite(flow, **options)
        assert report.passed, str(report)

    return check
