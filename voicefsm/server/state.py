"""Everything one running server knows: settings, services, live calls, counters. No module globals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from voicefsm.server.registry import CallRegistry
from voicefsm.server.services import CallServices
from voicefsm.settings import Settings


@dataclass(slots=True)
class Metrics:
    """Counters the /metrics and /healthz endpoints report."""

    calls_started: int = 0
    calls_by_outcome: Counter[str] = field(default_factory=Counter)
    rejected_requests: int = 0

    def call_started(self) -> None:
        self.calls_started += 1

    def call_ended(self, reason: str) -> None:
        self.calls_by_outcome[reason] += 1


@dataclass(slots=True)
class ServerState:
    """Attached to ``app.state.voicefsm`` by :func:`voicefsm.server.app.create_app`."""

    settings: Settings
    services: CallServices
    registry: CallRegistry
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
