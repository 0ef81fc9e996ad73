"""Shared fixtures: every test must leave no asyncio task behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def session_prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers started by module- or session-wide fixtures cache their prompts here, not in ~/.cache."""
    folder = tmp_path_factory.mktemp("session-prompt-cache")
    before = os.environ.get("VOICEFSM_PROMPT_CACHE_DIR")
    os.environ["VOICEFSM_PROMPT_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("VOICEFSM_PROMPT_CACHE_DIR", None)
    else:
        os.environ["VOICEFSM_PROMPT_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def private_prompt_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own prompt cache folder: no audio leaks between tests or into ~/.cache."""
    folder = tmp_path_factory.mktemp("prompt-cache")
    monkeypatch.setenv("VOICEFSM_PROMPT_CACHE_DIR", str(folder))
    return folder
