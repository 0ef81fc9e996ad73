"""The server opens flow resources once, closes them on shutdown, counts loop stalls, reports stuck steps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from voicefsm.flow import Hangup, Say, VoiceFlow, resource
from voicefsm.runtime.step_pool import StepPool
from voicefsm.server import app as app_module
from voicefsm.server.launch import flow_app, plan
from voicefsm.settings import Settings

events: list[str] = []


@resource(fake="fake ledger")
async def ledger(settings: Settings) -> AsyncIterator[str]:
    events.append("open")
    yield f"ledger at {settings.db_url}"
    events.append("close")


class Ledger(VoiceFlow):
    resources = (ledger,)

    greet = Say("Hi.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'records.db'}", **extra
    )


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server.test")  # type: ignore[arg-type]


async def test_resources_are_opened_once_with_the_settings_and_closed_on_shutdown(tmp_path: Path) -> None:
    events.clear()
    settings = settings_for(tmp_path)
    async with flow_app(settings, plan(settings, Ledger, stt="scripted", tts="scripted")) as app:
        assert events == ["open"]
        async with client(app) as http:
            metrics = (await http.get("/metrics")).text
        assert "voicefsm_loop_stalls_total 0.0" in metrics
        assert "voicefsm_loop_stall_seconds_total 0.0" in metrics
    assert events == ["open", "close"]


async def test_with_fake_resources_nothing_real_is_opened(tmp_path: Path) -> None:
    events.clear()
    settings = settings_for(tmp_path, VOICEFSM_FAKE_RESOURCES="1")
    async with flow_app(settings, plan(settings, Ledger, stt="scripted", tts="scripted")):
        pass
    assert events == []


async def test_health_is_503_while_stuck_steps_hold_the_pools_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = StepPool(1, abandoned_limit=1)
    monkeypatch.setattr(app_module, "step_pool", lambda: pool)
    release = threading.Event()
    settings = settings_for(tmp_path)
    async with (
        flow_app(settings, plan(settings, Ledger, stt="scripted", tts="scripted")) as app,
        client(app) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run(release.wait, 5.0), timeout=0.05)
        stuck = await http.get("/healthz")
        assert stuck.status_code == 503
        assert stuck.json()["status"] == "unhealthy"
        assert "still hold a thread" in stuck.json()["step_pool"]["problem"]
        release.set()
        assert await pool.run(lambda: "free again") == "free again"
        assert (await http.get("/healthz")).status_code == 200
    pool.shutdown()
