"""The fault matrix's line: a served flow over a real loopback socket, and the "clean end" check.

:func:`served_line` runs the product's real server path: the FastAPI app from
:func:`~voicefsm.server.app.create_app`, the :class:`~voicefsm.server.flow_service.FlowService`
that opens every call's session (records through the real :class:`~voicefsm.records.RecordWriter`
into a SQLite file), served by uvicorn on 127.0.0.1, and phoned by
:class:`~voicefsm.telephony.twilio.client.TwilioStreamClient`, which speaks Twilio's Media Streams
protocol. Providers are whatever the test hands in: scripted ones by default, or the SDK-driven
clients of the loopback fakes in tests/fakes.

:meth:`Line.clean_end` is reliability.md §4's "clean end": the call's session closed and its
record ended with an outcome and a final state, the caller heard exactly the prompts given, the
transcript and slots are persisted, and tasks and file descriptors are back to their baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from voicefsm.core.events import CallEvent, CallStarted
from voicefsm.flow import Ask, Hangup, Say, VoiceFlow
from voicefsm.providers.base import SpeechToText, TextToSpeech
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.records import CallStore, RecordWriter
from voicefsm.records.models import CallRecord
from voicefsm.runtime.driver import CallLimits
from voicefsm.runtime.session import CallSession
from voicefsm.server.app import create_app
from voicefsm.server.flow_service import FlowService
from voicefsm.server.serving import RunningServer, running_server
from voicefsm.settings import Settings
from voicefsm.telephony.recording import RecordingActions
from voicefsm.telephony.twilio.client import ReceivedItem, TwilioStreamClient
from voicefsm.telephony.twilio.media import OutboundMark, parse_outbound

GREETING = "Welcome to the fault line."
QUESTION = "What is your name?"
GOODBYE = "Thank you, goodbye."
GIVE_UP = "Sorry, I could not hear you. Goodbye."
APOLOGY = "Sorry, something went wrong on our side. Please call again later."
FRAME = b"\xff" * 160
WAIT_S = 5.0


class Caller(BaseModel):
    """What the fault line collects."""

    name: str | None = None


class FaultLine(VoiceFlow):
    """Greet, ask the caller's name, say goodbye: every fault is tried somewhere along this."""

    slots_model = Caller

    greet = Say(GREETING, initial=True, barge_in=False)
    ask_name = Ask(QUESTION, slot="name", no_input_s=30.0, retries=0)
    goodbye = Hangup(GOODBYE)
    give_up = Hangup(GIVE_UP, outcome="no_input")

    spoken = greet.to(ask_name)
    filled = ask_name.to(goodbye)
    no_input = ask_name.to(give_up)
    no_match = ask_name.to(give_up)


class QuickFaultLine(VoiceFlow):
    """The fault line with a caller who gets one second to answer (no-input faults)."""

    slots_model = Caller

    greet = Say(GREETING, initial=True, barge_in=False)
    ask_name = Ask(QUESTION, slot="name", no_input_s=1.0, retries=0)
    goodbye = Hangup(GOODBYE)
    give_up = Hangup(GIVE_UP, outcome="no_input")

    spoken = greet.to(ask_name)
    filled = ask_name.to(goodbye)
    no_input = ask_name.to(give_up)
    no_match = ask_name.to(give_up)


class HoldingPhone(TwilioStreamClient):
    """A phone on which a prompt plays for as long as the test needs: the marks whose name starts
    with ``hold`` are not echoed until a ``clear`` (a barge-in) comes, which echoes them at once.
    So a barge-in always lands while the prompt is playing, however loaded the machine is."""

    def __init__(self, url: str, *, hold: str = "ask_name", **options: Any) -> None:
        super().__init__(url, **options)
        self.hold = hold

    async def _handle(self, frame: str | bytes) -> None:
        message = parse_outbound(frame)
        if isinstance(message, OutboundMark) and message.name.startswith(self.hold):
            self.received.append(ReceivedItem("mark", name=message.name))
            self._pending_marks.append((message.name, float("inf")))
            async with self._changed:
                self._changed.notify_all()
            return
        await super()._handle(frame)

    async def release(self) -> None:
        """The held prompts finish playing: their marks are echoed as played."""
        held = [name for name, _ in self._pending_marks if name.startswith(self.hold)]
        self._pending_marks = [(n, due) for n, due in self._pending_marks if n not in held]
        for name in held:
            await self._echo(name)
        async with self._changed:
            self._changed.notify_all()

    def held(self) -> bool:
        """A held prompt's mark has arrived: the prompt is playing now."""
        return any(name.startswith(self.hold) for name, _ in self._pending_marks)


def open_fds(*, except_under: Path | None = None) -> int:
    """This process's open file descriptors; those on files under ``except_under`` are left out (the
    records database's connection pool may keep one more connection after a burst: not a leak)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        if except_under is not None:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor)
            if target.startswith(str(except_under)) and "records.db" in target:
                continue
        count += 1
    return count


async def eventually(
    predicate: Callable[[], bool], timeout_s: float = WAIT_S, what: str | Callable[[], str] = ""
) -> None:
    """Wait, bounded, for a condition nothing signals (a file descriptor closing in the kernel)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the kernel signals nothing when an fd closes
                await asyncio.sleep(0.005)
    except TimeoutError:
        described = what() if callable(what) else what
        raise AssertionError(f"still not true after {timeout_s:g} s: {described or predicate}") from None


@dataclass
class Line:
    """One served fault line: its server, records, providers made so far and the calls it ended."""

    server: RunningServer
    app: Any
    store: CallStore
    writer: RecordWriter
    service: FlowService
    stts: list[SpeechToText] = field(default_factory=list)
    ttss: list[TextToSpeech] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    sessions_closed: list[str] = field(default_factory=list)
    events: dict[str, list[CallEvent]] = field(default_factory=dict)
    #: Called with every event of every call, synchronously inside the call (to time a fault exactly).
    listeners: list[Callable[[CallEvent], None]] = field(default_factory=list)
    #: Called with each recognizer as it is made.
    on_stt: Callable[[SpeechToText], None] | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    baseline_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    baseline_fds: int = 0
    folder: Path | None = None

    @property
    def stream_url(self) -> str:
        return f"{self.server.ws_url}/twilio/stream"

    def client(self, **options: Any) -> TwilioStreamClient:
        return TwilioStreamClient(self.stream_url, **options)

    def holding_client(self, hold: str = "ask_name", **options: Any) -> HoldingPhone:
        """A phone that keeps the prompt of state ``hold`` playing until a barge-in clears it."""
        return HoldingPhone(self.stream_url, hold=hold, **options)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the server's Prometheus metrics (0 when it was never set)."""
        value = self.app.state.voicefsm.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)

    def dropped(self, kind: str) -> float:
        """Media-stream frames of ``kind`` the server dropped (or anomalies it counted)."""
        return self.metric("voicefsm_stream_frames_dropped_total", kind=kind)

    def call_stt(self, call_sid: str) -> ScriptedSpeechToText:
        """The scripted recognizer of the live call ``call_sid``."""
        call = self.app.state.voicefsm.registry.active[call_sid]
        assert isinstance(call.stt, ScriptedSpeechToText), call.stt
        return call.stt

    def live_state(self, call_sid: str) -> str | None:
        """The state the call's flow is in now (its live feed), or None."""
        feed = self.service.feeds.get(call_sid)
        return feed.state if feed is not None else None

    def take_baseline(self) -> None:
        """What is open with no call in progress; :meth:`clean_end` compares against it."""
        self.baseline_tasks = set(asyncio.all_tasks())
        self.baseline_fds = open_fds(except_under=self.folder)

    async def wait_ended(self, call_sid: str, timeout_s: float = WAIT_S) -> str:
        """Wait until the call's session has closed; return why the call ended."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: call_sid in self.ended)
        return self.ended[call_sid]

    def stt(self, index: int = 0) -> ScriptedSpeechToText:
        recognizer = self.stts[index]
        assert isinstance(recognizer, ScriptedSpeechToText)
        return recognizer

    async def wait_stt(self, index: int = 0) -> ScriptedSpeechToText:
        await eventually(lambda: len(self.stts) > index, what="the call's recognizer was made")
        return self.stt(index)

    async def record(self, call_sid: str) -> CallRecord:
        await self.writer.flush()
        record = await self.store.get_call(call_sid)
        assert record is not None, f"no record of call {call_sid}"
        return record

    async def clean_end(
        self,
        twilio: TwilioStreamClient,
        *,
        reason: str | Sequence[str] | None = None,
        outcome: str | None = None,
        heard: Sequence[str] | None = None,
        slots: Mapping[str, object] | None = None,
        said: Sequence[str] | None = (),
        interrupted: bool = False,
        closed_by_server: bool = True,
        alone: bool = True,
    ) -> CallRecord:
        """Assert reliability.md §4's clean end of ``twilio``'s call and return its record.

        ``heard``: the prompts the caller heard, in order (the transcript's agent turns; unless
        ``interrupted``, also exactly the audio that reached the phone). ``said``: the caller's turns
        (None: not checked). ``alone=False``: other calls are still live, so leave out the baseline check.
        """
        ended_by = await self.wait_ended(twilio.call_sid)
        if reason is not None:
            reasons = (reason,) if isinstance(reason, str) else tuple(reason)
            assert any(r in ended_by for r in reasons), f"ended by {ended_by!r}, expected {reasons}"
        if closed_by_server:
            await twilio.wait_closed()
        await twilio.close()
        assert twilio.call_sid not in self.app.state.voicefsm.registry.active, "the call is still registered"
        record = await self.record(twilio.call_sid)
        assert record.ended_at is not None, "the call's record was never ended"
        assert record.outcome, "the call's record has no outcome"
        assert record.final_state, "the call's record has no final state"
        if outcome is not None:
            assert record.outcome == outcome, f"outcome {record.outcome!r}, expected {outcome!r}"
        agent = [turn.text for turn in record.transcript if turn.speaker == "agent"]
        caller = [turn.text for turn in record.transcript if turn.speaker == "caller"]
        if heard is not None:
            assert agent == list(heard), f"the transcript's agent turns {agent} are not {list(heard)}"
            if not interrupted:
                scripted = [tts for tts in self.ttss if isinstance(tts, ScriptedTextToSpeech)]
                if scripted and len(scripted) == len(self.ttss):
                    expected = sum(scripted[0].audio_bytes_for(text) for text in heard)
                    assert len(twilio.agent_audio) == expected, (
                        f"the phone got {len(twilio.agent_audio)} bytes of audio, the prompts are {expected}"
                    )
                assert len(twilio.played_marks) >= len(heard), "a prompt's mark never came back played"
        if said is not None:
            assert caller == list(said), f"the transcript's caller turns {caller} are not {list(said)}"
        if slots is not None:
            assert record.slots == dict(slots), f"slots {record.slots}, expected {dict(slots)}"
        if alone:
            await self.assert_nothing_left()
        return record

    async def assert_nothing_left(self) -> None:
        """No call registered; tasks and file descriptors back to the baseline taken before the call."""
        assert not self.app.state.voicefsm.registry.active, "a call is still registered"
        current = asyncio.current_task()

        def leftover() -> list[str]:
            return sorted(
                task.get_name()
                for task in asyncio.all_tasks() - self.baseline_tasks
                if task is not current and not task.done()
            )

        await eventually(lambda: not leftover(), what=lambda: f"tasks left: {leftover()}")
        await eventually(
            lambda: open_fds(except_under=self.folder) <= self.baseline_fds,
            what=f"file descriptors back to {self.baseline_fds}",
        )


@contextlib.asynccontextmanager
async def served_line(
    tmp_path: Path,
    *,
    flow: type[VoiceFlow] = FaultLine,
    tts_factory: Callable[[], TextToSpeech] = ScriptedTextToSpeech,
    stt_factory: Callable[[], SpeechToText] | None = ScriptedSpeechToText,
    limits: CallLimits | None = None,
    settings: Settings | None = None,
    recordings: bool = True,
    actions: Any = None,
) -> AsyncIterator[Line]:
    """Serve ``flow`` on 127.0.0.1 with records in a SQLite file under ``tmp_path``."""
    store = await CallStore.open(f"sqlite:///{tmp_path / 'records.db'}")
    line_ref: list[Line] = []

    def make_tts() -> TextToSpeech:
        tts = tts_factory()
        line_ref[0].ttss.append(tts)
        return tts

    def make_stt() -> SpeechToText:
        assert stt_factory is not None
        stt = stt_factory()
        line_ref[0].stts.append(stt)
        if line_ref[0].on_stt is not None:
            line_ref[0].on_stt(stt)
        return stt

    try:
        async with RecordWriter(store) as writer:
            service = FlowService(
                flow,
                tts_factory=make_tts,
                stt_factory=make_stt if stt_factory is not None else None,
                actions=actions if actions is not None else RecordingActions(),
                recordings_dir=tmp_path / "recordings" if recordings else None,
                limits=limits or CallLimits(idle_timeout_s=5.0, handler_grace_s=3.0),
                writer=writer,
            )

            @contextlib.asynccontextmanager
            async def open_session(started: CallStarted) -> AsyncIterator[CallSession]:
                session_call = None
                try:
                    async with service.open_session(started) as session:
                        session_call = session.call
                        session.call.subscribe(line_ref[0].events.setdefault(started.call_id, []).append)
                        for listener in line_ref[0].listeners:
                            session.call.subscribe(listener)
                        yield session
                finally:
                    reason = session_call.disconnect_reason if session_call is not None else None
                    line = line_ref[0]
                    async with line.changed:
                        line.ended[started.call_id] = reason or "?"
                        line.sessions_closed.append(started.call_id)
                        line.changed.notify_all()

            services = service.services()
            services.open_session = open_session
            app = create_app(
                settings or Settings(_env_file=None),  # type: ignore[call-arg]
                services,
                store=store,
                writer=writer,
                flow_description=service.description(),
                feeds=service.feeds,
                metrics=service.metrics,
            )
            async with running_server(app) as server:
                line = Line(server, app, store, writer, service, folder=tmp_path)
                line_ref.append(line)
                line.take_baseline()
                yield line
    finally:
        await store.aclose()


async def answer_name(line: Line, twilio: TwilioStreamClient, name: str = "Ada Lovelace") -> None:
    """Hear the question, then say ``name`` (as the caller's recognizer would report it)."""
    await twilio.wait_until(lambda: any(m.startswith("ask_name") for m in twilio.played_marks))
    line.call_stt(twilio.call_sid).say(name, partials=False)
