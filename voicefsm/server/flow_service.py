"""Serve one flow: open each call's session, and record, show and count what happens on it.

A session is opened per call (:meth:`FlowService.open_session`) and closed once: it starts
the recording tap, the call's record and its live feed, builds the complete :class:`Call` and
the flow run, and on close writes the outcome, ends the feed and stops the recording.
Everything a flow does reaches three places as it happens: the call records (through the
non-blocking :class:`~voicefsm.records.RecordWriter`), the live feed the browser watches,
and the Prometheus metrics. None of them can slow down or end a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from voicefsm.core.actions import TelephonyActions
from voicefsm.core.events import CallStarted
from voicefsm.flow import VoiceFlow, fakes_for
from voicefsm.flow.spec import FlowSpec
from voicefsm.providers.base import TextToSpeech
from voicefsm.records import RecordWriter
from voicefsm.runtime.call import Call, SttFactory
from voicefsm.runtime.driver import CallLimits
from voicefsm.runtime.flow_runtime import FlowListener, Turn, TurnLatency
from voicefsm.runtime.recorder import AudioMixer
from voicefsm.runtime.session import CallSession, FlowRun
from voicefsm.runtime.snapshot import (
    CANNOT_RESUME,
    RESUME_PARAMETER,
    FlowSnapshot,
    SnapshotError,
    SnapshotKeeper,
    resume_problem,
)
from voicefsm.server.live import LiveFeed, LiveFeeds
from voicefsm.server.metrics import Metrics
from voicefsm.server.services import CallServices

log = logging.getLogger(__name__)

_ERROR_KINDS = {"tts": "tts", "stt": "stt"}


class CallObserver(FlowListener):
    """Hands one call's transitions, turns, slots and errors to the records, the live feed and metrics."""

    def __init__(self, call_sid: str, writer: RecordWriter | None, metrics: Metrics, feed: LiveFeed) -> None:
        self.call_sid = call_sid
        self.writer = writer
        self.metrics = metrics
        self.feed = feed
        # Turn times are seconds since the flow started running, which is now.
        self.started_at = datetime.now(UTC)
        #: A caller turn is recorded with its latency breakdown, once its answer's first audio is out.
        self._held: Turn | None = None

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
        if turn.speaker == "caller":
            self.flush()
            self._held = turn  # written with its breakdown (on_turn_latency), or by flush()
            return
        self._write(turn)

    def on_turn_latency(self, latency: TurnLatency) -> None:
        stages = latency.stages
        self.metrics.turn_stages({**stages, "total": latency.total_s})
        turn, self._held = self._held, None
        if turn is None:
            return
        breakdown: dict[str, Any] = {f"{name}_ms": _ms(seconds) for name, seconds in stages.items()}
        if latency.first_audio_s is not None:
            breakdown.update(
                tts_first_byte_ms=_ms(latency.tts_first_byte_s),
                tts_source=latency.source,
                prefetched=latency.prefetched,
            )
        self._write(turn, **breakdown)

    def flush(self) -> None:
        """Write a caller turn still held for its breakdown (the call is ending)."""
        turn, self._held = self._held, None
        if turn is not None:
            self._write(turn)

    def _write(self, turn: Turn, **breakdown: Any) -> None:
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
                **breakdown,
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
                "default": edge.default,
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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


@dataclass(slots=True)
class FlowService:
    """How to run ``flow`` on each call the server takes, and where what happens on it goes."""

    flow: type[VoiceFlow]
    tts_factory: Callable[[], TextToSpeech]
    stt_factory: SttFactory | None
    actions: TelephonyActions | None = None
    recordings_dir: Path | None = None
    limits: CallLimits | None = None
    writer: RecordWriter | None = None
    feeds: LiveFeeds = field(default_factory=LiveFeeds)
    metrics: Metrics = field(default_factory=Metrics)
    voice_monitor: bool = False
    #: The flow's resources, opened once for the process (``open_resources``); handed to every call.
    resources: Mapping[str, object] | None = None
    #: Give each call the flow's declared fakes instead (``VOICEFSM_FAKE_RESOURCES``: demos, load tests).
    fake_resources: bool = False
    #: Synthesize each call's next prompt ahead of need (``VOICEFSM_SPEAK_AHEAD``).
    speak_ahead: bool = False
    #: Where the flows' snapshots go; with it a call whose stream is lost can resume (scale/resume).
    snapshots: SnapshotKeeper | None = None

    def description(self) -> dict[str, Any]:
        """What ``GET /api/flow`` returns: states, transitions and slots for the diagram."""
        return browser_view(FlowSpec.of(self.flow))

    def services(self) -> CallServices:
        """The server's per-call wiring for this flow: every call opens :meth:`open_session`."""
        return CallServices(
            open_session=self.open_session, limits=self.limits or CallLimits(), snapshots=self.snapshots
        )

    @contextlib.asynccontextmanager
    async def open_session(self, started: CallStarted) -> AsyncIterator[CallSession]:
        """One call's session: recording, record, live feed, the complete call and its flow; closed once."""
        sid = started.call_id
        resuming = started.parameters.get(RESUME_PARAMETER) == "1" and self.snapshots is not None
        restore = await self._to_resume(sid) if resuming else None
        if resuming and restore is None:
            yield self._cannot_resume(started)
            return
        recording = self._recording_path(sid, restore)
        tap = await self._start_recording(sid, recording)
        feed = LiveFeed(sid)
        await self.feeds.add(feed)
        if restore is not None:
            await self._reopen(sid)
        if self.writer is not None:
            self.writer.call_started(
                sid, flow=self.flow.__name__, caller=started.caller, started_at=datetime.now(UTC)
            )
            if tap is not None and restore is None:  # a resumed call's record keeps its first recording
                self.writer.set_recording(sid, str(recording))
            if restore is not None:
                # This worker runs the call now: its record must say so before the lost stream's
                # worker can write a late end over the reopened record.
                self.writer.write_soon()
        call = Call(
            call_sid=sid,
            caller=started.caller,
            parameters=started.parameters,
            tap=tap,
            stt_factory=self.stt_factory,
        )
        observer = CallObserver(sid, self.writer, self.metrics, feed)
        run = FlowRun(
            call,
            self.flow,
            self.tts_factory(),
            actions=self.actions,
            listeners=[observer],
            resources=fakes_for(self.flow) if self.fake_resources else self.resources,
            speak_ahead=self.speak_ahead,
            restore=restore,
            snapshots=self.snapshots,
        )
        try:
            yield CallSession(call, run)
        finally:
            outcome = run.result.outcome if run.result is not None else "hung_up"
            observer.flush()
            if restore is not None:  # the lost stream's end may have been written late, by its worker
                await self._reopen(sid)
            if self.writer is not None:
                self.writer.call_ended(sid, outcome=outcome)
            ended = self.feeds.pop(sid)
            if ended is not None:
                ended.end(call.disconnect_reason or outcome)
            if tap is not None:
                try:
                    await tap.stop()
                except Exception:
                    log.exception("the recording of call %s did not close cleanly", sid)

    async def _start_recording(self, call_sid: str, path: Path | None) -> AudioMixer | None:
        if path is None:
            return None
        mixer = AudioMixer(record_path=path, monitor=self.voice_monitor)
        try:
            await mixer.start()
        except Exception:  # a full disk must cost the recording, not the call
            log.exception("could not start recording call %s; the call goes on unrecorded", call_sid)
            return None
        return mixer

    def _recording_path(self, call_sid: str, restore: FlowSnapshot | None = None) -> Path | None:
        if self.recordings_dir is None:
            return None
        if restore is not None:  # the first stream's file is kept; each resume records its own part
            return self.recordings_dir / f"{call_sid}.resumed-{restore.generation + 1}.wav"
        return self.recordings_dir / f"{call_sid}.wav"

    # -- resuming a call whose stream was lost (runtime/snapshot.py) ------------------------------------

    async def _to_resume(self, call_sid: str) -> FlowSnapshot | None:
        """The snapshot to resume ``call_sid`` from, or None (logged, and recorded) when there is none."""
        assert self.snapshots is not None
        try:
            snapshot = await self.snapshots.load(call_sid)
            problem = (
                "its snapshot is gone (the flow ended, or it was kept longer than allowed)"
                if snapshot is None
                else resume_problem(self.flow, snapshot)
            )
        except SnapshotError as exc:
            snapshot, problem = None, str(exc)
        except Exception as exc:  # the database: the caller hears an apology rather than silence
            log.exception("could not read the snapshot of call %s", call_sid)
            snapshot, problem = None, f"its snapshot could not be read ({type(exc).__name__})"
        if problem is None:
            assert snapshot is not None
            log.warning("call %s lost its stream; it resumes in %s", call_sid, snapshot.state)
            return snapshot
        log.warning("call %s cannot resume: %s", call_sid, problem)
        if self.writer is not None:
            self.writer.error(call_sid, kind="resume", where="-", message=f"cannot resume: {problem}")
        return None

    async def _reopen(self, call_sid: str) -> None:
        """The record of a resumed call goes on: after the lost stream's records, clear its end.

        Done when the resumed stream starts and again before it writes its own end: the lost stream
        may have run on another worker, whose end can land after the first.
        """
        assert self.snapshots is not None
        if self.writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.writer.flush()  # the lost stream's call_ended first
        try:
            await self.snapshots.reopen_call(call_sid)
        except Exception:
            log.exception("could not reopen the record of resumed call %s; the call goes on", call_sid)

    def _cannot_resume(self, started: CallStarted) -> CallSession:
        """A session that says the call cannot go on, then hangs up."""
        call = Call(call_sid=started.call_id, caller=started.caller, parameters=started.parameters)
        tts = self.tts_factory()

        async def apologise(call: Call) -> None:
            try:
                await call.speak(tts, CANNOT_RESUME, label="cannot_resume")
            finally:
                await tts.aclose()
            call.request_disconnect("cannot resume")

        return CallSession(call, apologise)
