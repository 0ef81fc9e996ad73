"""Put two flows on one line, with no telephony: an agent flow and a caller that is a flow or a script.

Each side's finished prompts reach the other side as the caller's words (a committed
transcript), the way a phone line carries speech: a prompt is handed over once its mark has
come back, i.e. once it has been heard to the end. In-process, a prompt cut short by the
listener is not handed over (they were talking over it); the servers' events feed does not
say whether a prompt was cut short, so over loopback every finished prompt is.

Turn-taking: the agent answers the call and speaks first; the caller joins the line the first
time the agent waits for an answer (a caller who listens through the greeting, then says what
they want). When either side hangs up, the other side's line goes dead too.

The caller may also be a :class:`CallerScript`: lines said in order, one each time the agent
has finished a question and waits for the answer.

Two ways to run it:

- :func:`bridge_flows`, in-process: two calls, each run by the one driver (``run_call``) over an
  in-process far end, scripted providers, one shared :class:`VirtualClock` (no-input timers
  cost no real time).
- :func:`bridge_servers`, over loopback between two running ``voicefsm serve`` (dev mode,
  scripted providers): for each server a fake Twilio (``POST /twilio/voice``, then the media
  stream with the webhook's token) that echoes marks, each side's words read from the call's
  live events feed (``WS /api/calls/{sid}/events``) and handed to the other side through
  ``POST /api/calls/{sid}/caller``; the records are read back from ``GET /api/calls/{sid}``.

Both are bounded: a conversation that does not end in time raises :class:`BridgeStuckError`
naming the state each side was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voicefsm.core.events import CallStarted
from voicefsm.core.intents import OutboundItem
from voicefsm.errors import VoiceFsmError
from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.resources import fakes_for
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import VirtualClock
from voicefsm.runtime.driver import run_call
from voicefsm.runtime.flow_runtime import FlowListener, FlowResult, Turn
from voicefsm.runtime.session import CallSession, FlowRun
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.testing.line import LINE_LIMITS
from voicefsm.transports.memory import MemoryFarEnd

__all__ = [
    "BridgeLine",
    "BridgeResult",
    "BridgeSide",
    "BridgeStuckError",
    "CallerScript",
    "bridge_flows",
    "bridge_servers",
]

Role = Literal["agent", "caller"]

CALLER_NUMBER = "+15550001234"
AGENT_NUMBER = "+15550009999"
#: Simulated seconds a bridged conversation may take (a booking takes well under a minute).
MAX_CALL_S = 600.0
#: Real seconds a bridge may take before it is declared stuck.
LIMIT_S = 20.0
#: Real seconds a server may take to write a finished call's record.
RECORD_WAIT_S = 5.0
#: Kinds of state (as ``GET /api/flow`` reports them) in which a flow waits for an answer.
LISTENING_KINDS = frozenset({"ask"})


@dataclass(frozen=True, slots=True)
class BridgeLine:
    """One utterance on the bridged line: who said it (``agent`` or ``caller``) and what."""

    speaker: Role
    text: str


@dataclass(frozen=True, slots=True)
class BridgeSide:
    """How one side's flow ended: its states in order, slots, outcome and what it heard and said.

    ``transcript`` is from this side's point of view: ``agent`` lines are what its flow said,
    ``caller`` lines what it heard.
    """

    flow: str
    call_sid: str
    outcome: str | None
    final_state: str | None
    path: tuple[str, ...]
    slots: dict[str, Any]
    transcript: tuple[BridgeLine, ...]
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BridgeResult:
    """Both sides of a bridged call, and the conversation as it went over the line."""

    agent: BridgeSide
    caller: BridgeSide
    conversation: tuple[BridgeLine, ...]
    #: Seconds the conversation took: simulated in-process, real over loopback.
    duration_s: float


@dataclass(frozen=True, slots=True, init=False)
class CallerScript:
    """A caller that says ``lines`` in order, one each time the agent has asked and waits for an answer.

    ``None`` keeps silent that once (the agent's no-input timer runs: simulated time in-process,
    real time over loopback). Once the lines have run out, the caller hangs up the next time it
    is asked (or keeps silent, with ``hang_up=False``).
    """

    lines: tuple[str | None, ...]
    hang_up: bool

    def __init__(self, lines: Sequence[str | None], *, hang_up: bool = True) -> None:
        if isinstance(lines, str):
            raise TypeError(f"CallerScript takes a list of lines, not one string: CallerScript([{lines!r}])")
        object.__setattr__(self, "lines", tuple(lines))
        object.__setattr__(self, "hang_up", hang_up)


class _Script:
    """A script's side of the line, for both bridges: what it heard, said and has left to say."""

    role: Role = "caller"

    def __init__(self, script: CallerScript, conversation: list[BridgeLine]) -> None:
        self.script = script
        self.conversation = conversation
        self.transcript: list[BridgeLine] = []
        self.said = 0
        self.on_line = False

    @property
    def state(self) -> str:
        total = len(self.script.lines)
        return f"script line {self.said + 1} of {total}" if self.said < total else "script, after its lines"

    def _heard(self, text: str) -> None:
        if self.on_line:
            self.transcript.append(BridgeLine("caller", text))

    def _next_line(self) -> str | None:
        """The answer to the question just asked, ``None`` for silence; off the line when it hangs up."""
        if self.said >= len(self.script.lines):
            self.on_line = not self.script.hang_up
            return None
        line = self.script.lines[self.said]
        self.said += 1
        if line is not None:
            self.transcript.append(BridgeLine("agent", line))
            self.conversation.append(BridgeLine("caller", line))
        return line

    def result(self) -> BridgeSide:
        """This side as a :class:`BridgeSide`: ``completed`` once every line was said."""
        finished = self.said == len(self.script.lines)
        return BridgeSide(
            flow="CallerScript",
            call_sid="",
            outcome="completed" if finished else "incomplete",
            final_state=None,
            path=(),
            slots={},
            transcript=tuple(self.transcript),
        )


class BridgeStuckError(VoiceFsmError, AssertionError):
    """A bridged conversation did not end in time; ``agent_state`` and ``caller_state`` say where each was."""

    def __init__(
        self, limit: str, agent_state: str | None, caller_state: str | None, conversation: list[BridgeLine]
    ) -> None:
        super().__init__(limit, agent_state, caller_state)
        self.limit = limit
        self.agent_state = agent_state
        self.caller_state = caller_state
        self.conversation = list(conversation)

    def __str__(self) -> str:
        last = "\n".join(f"  {line.speaker}: {line.text}" for line in self.conversation[-6:]) or "  (nothing)"
        return (
            f"the bridged call did not end within {self.limit}: the agent was in "
            f"{self.agent_state or '(not started)'}, the caller in {self.caller_state or '(not started)'}. "
            f"Last words on the line:\n{last}\n"
            "Check that each side's questions get an answer the other side's expectation accepts."
        )


def _unheard(item: OutboundItem) -> None:
    """Audio sent down an in-process leg: the driver's playout times it; nobody keeps it."""


def _not_on_line(flow: str, call_sid: str) -> BridgeSide:
    """A side whose flow never ran: the agent ended the call before it asked anything."""
    return BridgeSide(flow, call_sid, None, None, (), {}, ())


# -- in-process -------------------------------------------------------------------------------


class _Leg(FlowListener):
    """One side of the in-process line: a call driven by ``run_call`` over an in-process far end."""

    def __init__(
        self,
        role: Role,
        flow: type[VoiceFlow],
        clock: VirtualClock,
        today: dt.date,
        number: str,
        conversation: list[BridgeLine],
    ) -> None:
        self.role = role
        self.flow = flow
        self.clock = clock
        self.today = today
        self.number = number
        self.conversation = conversation
        self.call_sid = "CA" + secrets.token_hex(16)
        self.call: Call | None = None
        self.far_end = MemoryFarEnd(on_intent=_unheard)  # the other side hears words, not audio
        self.stt = ScriptedSpeechToText()
        self.tts = ScriptedTextToSpeech()
        self.peer: _Leg | _ScriptLeg | None = None
        self.path: list[str] = []
        self.transcript: list[BridgeLine] = []
        self.errors: list[str] = []
        self.listened = asyncio.Event()
        self.run_task: asyncio.Task[FlowResult | None] | None = None
        self._run: FlowRun | None = None

    @property
    def state(self) -> str | None:
        return self.path[-1] if self.path else None

    async def start(self) -> None:
        """Answer the call and start the flow on it."""
        self.far_end.start(self.call_sid, self.number)
        self.run_task = asyncio.create_task(self._run_call(), name=f"bridge-{self.role}-flow")
        self.run_task.add_done_callback(lambda _: self.listened.set())  # nothing more to wait for

    @contextlib.asynccontextmanager
    async def _session(self, started: CallStarted) -> AsyncIterator[CallSession]:
        self.call = Call(
            call_sid=started.call_id,
            caller=started.caller,
            stt_factory=(lambda: self.stt) if self.flow.uses_stt else None,
        )
        self._run = FlowRun(
            self.call,
            self.flow,
            self.tts,
            clock=self.clock,
            listeners=[self],
            today=lambda: self.today,
            resources=fakes_for(self.flow),  # in process: the flow's declared fakes
        )
        yield CallSession(self.call, self._run, self.clock)

    async def _run_call(self) -> FlowResult | None:
        await run_call(self.far_end, self._session, LINE_LIMITS)
        if self.call is not None and self.call.hangup_reason is not None and self.peer is not None:
            self.peer.line_dead(f"the {self.role} hung up")
        return self._run.result if self._run is not None else None

    async def close(self) -> None:
        """Hang up this side if it still runs and await its end."""
        if self.run_task is not None:
            self.run_task.cancel()
            await asyncio.wait([self.run_task])

    def hear(self, text: str) -> None:
        """The other side said ``text``: recognise it, when this side is on the line."""
        if self.run_task is None or self.call is None or self.call.is_disconnected:
            return
        self.stt.say(text)

    def question_asked(self) -> None:
        """The other side waits for an answer: a flow answers by itself, in its own state."""

    def line_dead(self, reason: str) -> None:
        """The other side hung up."""
        self.far_end.hang_up(reason)

    # -- FlowListener ------------------------------------------------------------------------

    def on_transition(self, source: str, event: str, target: str) -> None:
        self.path.append(target)

    def on_turn(self, turn: Turn) -> None:
        line = BridgeLine(turn.speaker, turn.text)
        self.transcript.append(line)
        if turn.speaker == "agent" and not turn.interrupted:
            self.conversation.append(BridgeLine(self.role, turn.text))
            if self.peer is not None:
                self.peer.hear(turn.text)

    def on_listen(self, state: str) -> None:
        self.listened.set()
        if self.peer is not None:
            self.peer.question_asked()

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        self.errors.append(f"{kind}: {message}")

    def side(self) -> BridgeSide:
        done = self.run_task is not None and self.run_task.done() and not self.run_task.cancelled()
        result = self.run_task.result() if self.run_task is not None and done else None
        if result is None:
            return _not_on_line(self.flow.__name__, self.call_sid)
        return BridgeSide(
            flow=result.flow,
            call_sid=self.call_sid,
            outcome=result.outcome,
            final_state=result.final_state,
            path=tuple(self.path),
            slots=dict(result.slots),
            transcript=tuple(self.transcript),
            errors=tuple(self.errors),
        )


class _ScriptLeg(_Script):
    """A script on the in-process line: it answers when the agent listens, from the agent's loop."""

    peer: _Leg | None = None
    run_task: asyncio.Task[FlowResult] | None = None  # a script runs nothing of its own

    async def start(self) -> None:
        """Join the line; the agent is already waiting for an answer, unless it has hung up."""
        if self.peer is not None and self.peer.run_task is not None and not self.peer.run_task.done():
            self.on_line = True
            self.question_asked()

    async def close(self) -> None:
        self.on_line = False

    def hear(self, text: str) -> None:
        self._heard(text)

    def question_asked(self) -> None:
        if not self.on_line or self.peer is None:
            return
        if (line := self._next_line()) is not None:
            self.peer.hear(line)
        elif not self.on_line:
            self.peer.line_dead("the caller hung up: its script had no more lines")

    def line_dead(self, reason: str) -> None:
        self.on_line = False

    def side(self) -> BridgeSide:
        return self.result()


async def bridge_flows(
    agent: type[VoiceFlow],
    caller: type[VoiceFlow] | CallerScript,
    *,
    today: dt.date | None = None,
    caller_number: str = CALLER_NUMBER,
    max_call_s: float = MAX_CALL_S,
    limit_s: float = LIMIT_S,
) -> BridgeResult:
    """Run ``caller`` (a flow or a :class:`CallerScript`) against ``agent`` in-process until both have ended.

    ``today`` is what both flows take today to be (default: the real date). The call may last
    ``max_call_s`` simulated seconds and ``limit_s`` real ones; past either, :class:`BridgeStuckError`.
    Leaves no task behind, whatever happens.
    """
    clock = VirtualClock()
    day = today or dt.date.today()
    conversation: list[BridgeLine] = []
    agent_leg = _Leg("agent", agent, clock, day, caller_number, conversation)
    caller_leg = (
        _ScriptLeg(caller, conversation)
        if isinstance(caller, CallerScript)
        else _Leg("caller", caller, clock, day, AGENT_NUMBER, conversation)
    )
    agent_leg.peer, caller_leg.peer = caller_leg, agent_leg
    watchdog = asyncio.create_task(clock.sleep(max_call_s), name="bridge-watchdog")
    try:
        try:
            async with asyncio.timeout(limit_s) as deadline:
                await agent_leg.start()
                asked = asyncio.create_task(agent_leg.listened.wait(), name="bridge-agent-asks")
                try:
                    await _until_done([asked], watchdog)
                finally:
                    asked.cancel()
                    await asyncio.gather(asked, return_exceptions=True)
                agent_gone = agent_leg.run_task is not None and agent_leg.run_task.done()
                if not watchdog.done() and not agent_gone:  # no one to talk to once the agent hung up
                    await caller_leg.start()
                await _until_done([leg.run_task for leg in (agent_leg, caller_leg) if leg.run_task], watchdog)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise BridgeStuckError(
                f"{limit_s:g} s", agent_leg.state, caller_leg.state, conversation
            ) from None
        if watchdog.done():
            limit = f"{max_call_s:g} simulated seconds"
            raise BridgeStuckError(limit, agent_leg.state, caller_leg.state, conversation)
        return BridgeResult(agent_leg.side(), caller_leg.side(), tuple(conversation), clock.now())
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, agent_leg.close(), caller_leg.close(), return_exceptions=True)
        clock.close()


async def _until_done(tasks: list[asyncio.Task[Any]], watchdog: asyncio.Task[None]) -> None:
    """Wait until every one of ``tasks`` is done, or ``watchdog`` is; cancels none of them."""
    pending = {*tasks}
    while pending and not watchdog.done():
        _, still = await asyncio.wait([*pending, watchdog], return_when=asyncio.FIRST_COMPLETED)
        pending = still - {watchdog}


# -- over loopback ----------------------------------------------------------------------------


@dataclass
class _RemoteLeg:
    """One server's side: its fake Twilio stream, its live events feed, where its flow is."""

    role: Role
    base_url: str
    number: str
    conversation: list[BridgeLine]
    http: httpx.AsyncClient = field(init=False)
    call_sid: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    state: str | None = None
    state_kinds: dict[str, str] = field(default_factory=dict)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    peer: _RemoteLeg | _RemoteScript | None = None
    twilio: TwilioStreamClient | None = None
    feed: ClientConnection | None = None

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=10)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)

    async def dial(self) -> None:
        """Ring the server as Twilio does, open the call's feed, then its media stream."""
        flow = await self.http.get("/api/flow")
        flow.raise_for_status()
        self.state_kinds = {state["id"]: state["kind"] for state in flow.json()["states"]}
        form = {
            "CallSid": self.call_sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.number,
            "To": AGENT_NUMBER if self.role == "agent" else CALLER_NUMBER,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        webhook = await self.http.post("/twilio/voice", data=form)
        webhook.raise_for_status()
        stream = ET.fromstring(webhook.text).find("./Connect/Stream")
        if stream is None:
            raise VoiceFsmError(
                f"{self.base_url} answered the voice webhook without a <Stream>: {webhook.text}"
            )
        parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        # The feed waits a moment for a call that is about to start, so open it first: no turn is missed.
        self.feed = await connect(f"{self.ws_url}/api/calls/{self.call_sid}/events", open_timeout=10)
        self.twilio = TwilioStreamClient(
            stream.attrib["url"], call_sid=self.call_sid, custom_parameters=parameters
        )
        await self.twilio.open()

    async def follow(self) -> None:
        """Read the feed until the call ends: note the state, hand each finished prompt to the peer."""
        assert self.feed is not None
        try:
            async for frame in self.feed:
                message = json.loads(frame)
                kind = message.get("type")
                if kind == "snapshot":
                    self.state = message.get("state")
                    for turn in message.get("transcript", []):
                        await self._turn(turn)
                elif kind == "state":
                    self.state = message["state"]
                elif kind == "turn":
                    await self._turn(message)
                elif kind == "ended":
                    break
        except ConnectionClosed:
            pass
        finally:
            self.ended.set()
            if self.peer is not None:
                await self.peer.hang_up()

    async def _turn(self, turn: dict[str, Any]) -> None:
        if turn.get("speaker") != "agent":  # what this call heard: the peer's words, already on the line
            return
        text = str(turn.get("text", ""))
        self.conversation.append(BridgeLine(self.role, text))
        listening = self.state_kinds.get(self.state or "") in LISTENING_KINDS
        if listening:
            self.asked.set()
        if self.peer is not None:
            await self.peer.hear(text)
            if listening:
                await self.peer.question_asked()

    async def hear(self, text: str) -> None:
        """The other side said ``text``: inject it as this call's caller, when this call is live."""
        if self.twilio is None or self.ended.is_set():
            return
        response = await self.http.post(f"/api/calls/{self.call_sid}/caller", json={"text": text})
        if response.status_code not in (202, 404):  # 404: this call ended meanwhile
            raise VoiceFsmError(
                f"{self.base_url} refused caller input ({response.status_code}): {response.text}"
            )

    async def question_asked(self) -> None:
        """The other side waits for an answer: a flow answers by itself, in its own state."""

    async def hang_up(self) -> None:
        """The line went dead on the other side: Twilio sends ``stop``."""
        if self.twilio is not None and not self.twilio.closed:
            with contextlib.suppress(Exception):
                await self.twilio.stop()

    async def record(self) -> dict[str, Any]:
        """The call's record, once its end is written (records land just after the call ends)."""
        try:
            async with asyncio.timeout(RECORD_WAIT_S):
                while True:
                    response = await self.http.get(f"/api/calls/{self.call_sid}")
                    if response.status_code == 200:
                        body: dict[str, Any] = response.json()
                        if body.get("outcome") is not None and not body.get("live"):
                            return body
                    await asyncio.sleep(0.02)  # polling: the record store offers nothing to await
        except TimeoutError:
            raise VoiceFsmError(
                f"{self.base_url} wrote no finished record of call {self.call_sid} "
                f"within {RECORD_WAIT_S:g} s of its end; is the server running with a call store?"
            ) from None

    async def close(self) -> None:
        if self.twilio is not None:
            await self.twilio.close()
        if self.feed is not None:
            with contextlib.suppress(Exception):
                await self.feed.close()
        await self.http.aclose()

    async def side(self) -> BridgeSide:
        """This side as its server recorded it."""
        record = await self.record()
        return BridgeSide(
            flow=str(record.get("flow", "")),
            call_sid=self.call_sid,
            outcome=record.get("outcome"),
            final_state=record.get("final_state"),
            path=tuple(str(step["target"]) for step in record.get("path", [])),
            slots=dict(record.get("slots", {})),
            transcript=tuple(BridgeLine(t["speaker"], t["text"]) for t in record.get("transcript", [])),
            errors=tuple(f"{e['kind']}: {e['message']}" for e in record.get("errors", [])),
        )


class _RemoteScript(_Script):
    """A script on the loopback line: it answers through the agent server's caller endpoint."""

    peer: _RemoteLeg | None = None

    async def dial(self) -> None:
        """Join the line: the agent is waiting for an answer."""
        self.on_line = True
        await self.question_asked()

    async def follow(self) -> None:
        """Nothing to follow: a script speaks only when asked."""

    async def hear(self, text: str) -> None:
        self._heard(text)

    async def question_asked(self) -> None:
        if not self.on_line or self.peer is None:
            return
        if (line := self._next_line()) is not None:
            await self.peer.hear(line)
        elif not self.on_line:
            await self.peer.hang_up()

    async def hang_up(self) -> None:
        self.on_line = False

    async def close(self) -> None:
        self.on_line = False


async def bridge_servers(
    agent_url: str,
    caller: str | CallerScript,
    *,
    caller_number: str = CALLER_NUMBER,
    limit_s: float = LIMIT_S,
) -> BridgeResult:
    """Bridge two running ``voicefsm serve`` (dev mode, scripted providers) over loopback.

    ``agent_url`` serves the agent flow, ``caller`` the caller flow (e.g. ``http://127.0.0.1:8080``),
    or ``caller`` is a :class:`CallerScript`. Each server gets a call placed as Twilio places it;
    the two calls are then bridged as the module docstring says. Returns both calls' records
    (``GET /api/calls/{sid}``) once written.
    Raises :class:`BridgeStuckError` when the whole exchange takes longer than ``limit_s``.
    """
    now = asyncio.get_running_loop().time
    started = now()
    conversation: list[BridgeLine] = []
    agent = _RemoteLeg("agent", agent_url, caller_number, conversation)
    other = (
        _RemoteScript(caller, conversation)
        if isinstance(caller, CallerScript)
        else _RemoteLeg("caller", caller, AGENT_NUMBER, conversation)
    )
    agent.peer, other.peer = other, agent
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            async with asyncio.timeout(limit_s) as deadline:
                await agent.dial()
                tasks.append(asyncio.create_task(agent.follow(), name="bridge-agent-feed"))
                await _first_done(agent.asked.wait(), agent.ended.wait())
                if not agent.ended.is_set():
                    await other.dial()
                    tasks.append(asyncio.create_task(other.follow(), name="bridge-caller-feed"))
                await asyncio.gather(*tasks)
        except TimeoutError:
            if not deadline.expired():  # e.g. a stream that never opened: not a stuck conversation
                raise
            raise BridgeStuckError(f"{limit_s:g} s", agent.state, other.state, conversation) from None
        duration = now() - started
        agent_side = await agent.side()
        if isinstance(other, _RemoteScript):
            caller_side = other.result()
        else:
            caller_side = await other.side() if other.twilio is not None else _not_on_line("", other.call_sid)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(agent.close(), other.close(), return_exceptions=True)
    return BridgeResult(agent_side, caller_side, tuple(conversation), duration)


async def _first_done(*awaitables: Any) -> None:
    """Wait until one of ``awaitables`` is done; cancel and await the others."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
