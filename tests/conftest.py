"""Shared fixtures: every test must leave no asyncio task behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail a test that leaves a task running after it (and its fixtures) finished."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leftover = {task for task in asyncio.all_tasks() - before if task is not current and not task.done()}
    if leftover:
        # Tasks cancelled during teardown may need a turn of the loop to finish; wait for them, bounded.
        _, still_running = await asyncio.wait(leftover, timeout=2.0)
        names = sorted(task.get_name() for task in still_running)
        assert not still_running, f"tasks left running after the test: {names}"
