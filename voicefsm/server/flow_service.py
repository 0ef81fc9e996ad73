"""Serve one flow: build each call's runtime, and record, show and count what happens on it.

Everything a flow does reaches three places as it happens: the call records (through the
non-blocking :class:`~voicefsm.records.RecordWriter`), the live feed the browser watches,
and the Prometheus metrics. None of them can slow down or end a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from voicefsm.core.actions import TelephonyActions
from voicefsm.flow import VoiceFlow, fakes_for
from voicefsm.flow.spec import FlowSpec
from voicefsm.providers.base import TextToSpeech
from voicefsm.runtime.call import AudioTap, Call, SttFactory
from voicefsm.runtime.flow_runtime import FlowListener, FlowRuntime, Turn
from voicefsm.runtime.media_loop import CallLimits
from voicefsm.runtime.recorder import AudioMixer
from voicefsm.server.live import LiveFeed
from voicefsm.server.services import CallServices
from voicefsm.server.state import ServerState

log = logging.getLogger(__name__)

_ERROR_KINDS = {"tts": "tts", "stt": "stt"}


class CallObserver(FlowListener):
    """Hands one call's transitions, turns, slots and errors to the records, the live feed and metrics."""

    def __init__(self, call_sid: str, state: ServerState, feed: LiveFeed) -> None:
        self.call_sid = call_sid
        self.writer = state.writer
        self.metrics = state.metrics
        self.feed = feed
        # Turn times are seconds since the flow started running, which is now.
        self.started_at = datetime.now(UTC)

    def _at(self, clock_s: float) -> datetime:
        return self.started_at + timedelta(seconds=clock_s)

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.feed.transition(source, event, target)
        if self.writer is not None:
            self.writer.transition(self.call_sid, source=source, event=event, target=target)

    def on_turn(self, turn: Turn) -> None:
        self.feed.turn(turn.speaker, turn.text)
        if turn.speaker == "agent" and turn.latency_s is not None:
            self.metrics.turn_latency.observe(turn.latency_s)
        if self.writer is not None:
            self.writer.turn(
                self.call_sid,
                speaker=turn.speaker,
                text=turn.text,
                started_at=self._at(turn.start_s),
                ended_at=self._at(turn.end_s),
                latency_ms=turn.latency_s * 1000 if turn.latency_s is not None else None,
                interrupted=turn.interrupted,
                via=turn.via,
            )

    def on_slot(self, name: str, value: object) -> None:
        self.feed.slot(name, _jsonable(value))
        if self.writer is not None:
            self.writer.slot(self.call_sid, name, value)

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        if kind in _ERROR_KINDS:
            self.metrics.provider_error(_ERROR_KINDS[kind])
        if self.writer is not None:
            self.writer.error(self.call_sid, kind=kind, where=self.feed.state or "-", message=message)


def browser_view(spec: FlowSpec) -> dict[str, Any]:
    """The flow as the browser phone draws it: one edge per event, guards joined."""
    properties = spec.slots_schema.get("properties", {})
    return {
        "name": spec.name,
        "doc": spec.doc,
        "initial": spec.initial,
        "states": [
            {
                "id": state.id,
                "kind": state.kind,
                "prompt": state.prompt,
                "final": state.final,
                "default": state.default,
            }
            for state in spec.states
        ],
        "transitions": [
            {
                "source": edge.source,
                "event": event,
                "target": edge.target or edge.source,
                "cond": " and ".join(edge.guards) or None,
            }
            for edge in spec.transitions
            for event in edge.events
        ],
        "slots": [{"name": name, "type": _schema_type(schema)} for name, schema in properties.items()],
    }


def _schema_type(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema.get("format", schema["type"]))
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    return _schema_type(options[0]) if options else "any"


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


@dataclass(slots=True)
class FlowService:
    """How to run ``flow`` on each call the server takes."""

    flow: type[VoiceFlow]
    tts_factory: Callable[[], TextToSpeech]
    stt_factory: SttFactory | None
    actions: TelephonyActions | None = None
    recordings_dir: Path | None = None
    limits: CallLimits | None = None
    #: The flow's resources, opened once for the process (``open_resources``); handed to every call.
    resources: Mapping[str, object] | None = None
    #: Give each call the flow's declared fakes instead (``VOICEFSM_FAKE_RESOURCES``: demos, load tests).
    fake_resources: bool = False

    def description(self) -> dict[str, Any]:
        """What ``GET /api/flow`` returns: states, transitions and slots for the diagram."""
        return browser_view(FlowSpec.of(self.flow))

    def services(self, state_ref: Callable[[], ServerState]) -> CallServices:
        """The server's per-call wiring for this flow. ``state_ref`` gives the server state at call time."""
        observers: dict[str, CallObserver] = {}
        outcomes: dict[str, str] = {}
        flow_name = self.flow.__name__

        async def started(call: Call) -> None:
            state = state_ref()
            sid = call.call_sid or "?"
            now = datetime.now(UTC)
            feed = LiveFeed(sid)
            await state.feeds.add(feed)
            observers[sid] = CallObserver(sid, state, feed)
            if state.writer is not None:
                state.writer.call_started(sid, flow=flow_name, caller=call.caller, started_at=now)
                recording = self._recording_path(sid)
                if recording is not None and call.tap is not None:
                    state.writer.set_recording(sid, str(recording))

        async def handler(call: Call) -> None:
            sid = call.call_sid or "?"
            observer = observers.get(sid)
            tts = self.tts_factory()
            try:
                runtime = FlowRuntime(
                    self.flow,
                    call,
                    tts,
                    actions=self.actions,
                    listeners=[observer] if observer else (),
                    resources=fakes_for(self.flow) if self.fake_resources else self.resources,
                )
                result = await runtime.run()
                outcomes[sid] = result.outcome
            finally:
                await tts.aclose()

        async def ended(call: Call) -> None:
            state = state_ref()
            sid = call.call_sid or "?"
            observers.pop(sid, None)
            outcome = outcomes.pop(sid, "hung_up")
            if state.writer is not None:
                state.writer.call_ended(sid, outcome=outcome)
            feed = state.feeds.pop(sid)
            if feed is not None:
                feed.end(call.disconnect_reason or outcome)

        async def tap_factory(call_sid: str) -> AudioTap | None:
            path = self._recording_path(call_sid)
            if path is None:
                return None
            mixer = AudioMixer(record_path=path, monitor=state_ref().settings.voice_monitor)
            await mixer.start()
            return mixer

        return CallServices(
            handler=handler,
            stt_factory=self.stt_factory,
            tap_factory=tap_factory,
            on_call_started=started,
            on_call_ended=ended,
            limits=self.limits or CallLimits(),
        )

    def _recording_path(self, call_sid: str) -> Path | None:
        if self.recordings_dir is None:
            return None
        return self.recordings_dir / f"{call_sid}.wav"
