"""Draining stops the campaign dialers first: a callee who answered would only hear "lines are busy"."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI

from voicefsm.server.registry import CallRegistry
from voicefsm.server.serving import drain


class Dialers:
    def __init__(self) -> None:
        self.stopped = False

    async def stop_workers(self) -> None:
        self.stopped = True


async def test_drain_stops_the_campaign_workers_before_waiting_for_calls() -> None:
    app = FastAPI()
    app.state.voicefsm = SimpleNamespace(draining=False, registry=CallRegistry(require_token=False))
    dialers = Dialers()
    app.state.voicefsm_campaigns = SimpleNamespace(opened=dialers)
    assert await drain(app, 1.0) == 0
    assert app.state.voicefsm.draining and dialers.stopped


async def test_drain_without_campaigns_open_just_drains() -> None:
    app = FastAPI()
    app.state.voicefsm = SimpleNamespace(draining=False, registry=CallRegistry(require_token=False))
    app.state.voicefsm_campaigns = SimpleNamespace(opened=None)
    assert await drain(app, 1.0) == 0
