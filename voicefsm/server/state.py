"""Everything one running server knows: settings, services, live calls, counters. No module globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicefsm.records import CallStore, RecordWriter
from voicefsm.server.live import LiveFeeds
from voicefsm.server.metrics import Metrics
from voicefsm.server.registry import CallRegistry
from voicefsm.server.services import CallServices
from voicefsm.settings import Settings


@dataclass(slots=True)
class ServerState:
    """Attached to ``app.state.voicefsm`` by :func:`voicefsm.server.app.create_app`."""

    settings: Settings
    services: CallServices
    registry: CallRegistry
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    store: CallStore | None = None
    writer: RecordWriter | None = None
    flow_description: dict[str, Any] | None = None
    feeds: LiveFeeds = field(default_factory=LiveFeeds)
