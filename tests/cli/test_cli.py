"""The ``voicefsm`` command through subprocesses: serve (a call placed as Twilio places it) and its
shutdown, validate, graph, --version and call.

Every subprocess runs in a temporary directory (its SQLite records and recordings land there), with
no credentials in its environment, bounded by a timeout and killed at teardown if still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from voicefsm import __version__
from voicefsm.core.audio import FRAME_BYTES, ULAW_SILENCE
from voicefsm.flow import load_flow
from voicefsm.records import CallStore
from voicefsm.telephony.twilio.client import TwilioStreamClient

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows"
BOOKING = FLOWS / "booking.py"
COMMAND_TIMEOUT_S = 30
STARTUP_TIMEOUT_S = 20
CALL_TIMEOUT_S = 30
CALLER = "+15550001234"
OUR_NUMBER = "+15550009999"
SILENCE = bytes([ULAW_SILENCE]) * FRAME_BYTES
T = TypeVar("T")
READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:(\d+))")

# What the caller answers in each listening state of flows/booking.py, as the injection API takes it.
BOOKING_ANSWERS: dict[str, dict[str, str]] = {
    "ask_day": {"text": "tuesday"},
    "ask_time": {"text": "10 am"},
    "ask_name": {"text": "Alex"},
    "confirm": {"digits": "1"},
    "offer": {"digits": "1"},  # the second caller wants the same time: take the nearest free one
}
BOOKING_PATH = ["greet", "ask_day", "ask_time", "ask_name", "confirm", "check", "book", "booked"]
#: The states of BOOKING_PATH that speak (the calendar steps are quick: no filler).
BOOKING_PROMPTS = ["greet", "ask_day", "ask_time", "ask_name", "confirm", "booked"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without credentials or voicefsm settings, plus ``extra``."""
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env["VOICEFSM_PROMPT_CACHE_DIR"] = os.environ["VOICEFSM_PROMPT_CACHE_DIR"]  # the test's own (conftest)
    return {**env, **extra}


def run_all(
    *commands: tuple[str, ...], cwd: Path, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``voicefsm ARGS`` for each of ``commands``, side by side (start-up dominates), bounded."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "voicefsm", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env or clean_env(),
        )
        for args in commands
    ]
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        finished = []
        for args, process in zip(commands, processes, strict=True):
            out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            finished.append(subprocess.CompletedProcess(args, process.returncode, out, err))
        return finished
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``voicefsm ARGS`` to the end, bounded."""
    (done,) = run_all(args, cwd=cwd, env=env)
    return done


# -- serve ---------------------------------------------------------------------------------------


@dataclass
class Served:
    """A running ``voicefsm serve`` and where it listens."""

    process: asyncio.subprocess.Process
    url: str
    port: int
    banner: list[str]
    stderr_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def exit_code(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def voicefsm_serve(cwd: Path, *args: str, **env: str) -> AsyncIterator[Served]:
    """Start ``voicefsm serve ARGS --port 0`` and learn its port from the line it prints when ready."""
    stderr_path = cwd / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicefsm", "serve", *args, "--port", "0",
            cwd=cwd, env=clean_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            banner: list[str] = []
            try:
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    while not (ready := READY.search(banner[-1] if banner else "")):
                        line = await process.stdout.readline()
                        if not line:
                            raise AssertionError(f"serve exited before listening:\n{stderr_path.read_text()}")
                        banner.append(line.decode())
            except TimeoutError:
                raise AssertionError(f"serve printed no URL in {STARTUP_TIMEOUT_S} s: {banner}") from None
            # The rest of the banner is printed at once, before the first request can be answered.
            while len(banner) < 6 and (line := await process.stdout.readline()):
                banner.append(line.decode())
            yield Served(process, ready.group(1), int(ready.group(2)), banner, stderr_path)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def stream_from_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Stream url>`` and its ``<Parameter>``s from the voice webhook's answer."""
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return stream.attrib["url"], parameters


async def ring(http: httpx.AsyncClient, call_sid: str) -> httpx.Response:
    """Twilio's first request for an incoming call: the voice webhook, form-encoded."""
    form = {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": CALLER,
        "To": OUR_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    return await http.post("/twilio/voice", data=form)


@contextlib.asynccontextmanager
async def phone_call(
    served: Served, http: httpx.AsyncClient, call_sid: str
) -> AsyncIterator[TwilioStreamClient]:
    """A call placed the way Twilio places it: webhook, then the media stream with the webhook's token.

    Like a real phone line, it sends 20 ms of silence every 20 ms while it is open.
    """
    webhook = await ring(http, call_sid)
    assert webhook.status_code == 200
    assert webhook.headers["content-type"].startswith("application/xml")
    url, parameters = stream_from_twiml(webhook.text)
    assert url == f"{served.ws_url}/twilio/stream"
    assert set(parameters) == {"token"}
    async with TwilioStreamClient(url, call_sid=call_sid, custom_parameters=parameters) as twilio:
        line = asyncio.create_task(twilio.stream_audio(SILENCE * 50 * CALL_TIMEOUT_S), name="phone-line")
        try:
            yield twilio
        finally:
            line.cancel()
            await asyncio.gather(line, return_exceptions=True)


class Feed:
    """One call's live events (``/api/calls/{sid}/events``): the states it enters, as they happen."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.states: list[str] = []
        self.ended: str | None = None

    async def next_state(self, timeout_s: float = CALL_TIMEOUT_S) -> str | None:
        """The next state the call enters; None once it has ended."""
        async with asyncio.timeout(timeout_s):
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "snapshot" and message["state"] is not None:
                    self.states.append(message["state"])
                    return str(message["state"])
                if message["type"] == "state":
                    self.states.append(message["state"])
                    return str(message["state"])
                if message["type"] == "ended":
                    self.ended = message["reason"]
                    return None
        return None

    async def until_state(self, state: str) -> None:
        while (entered := await self.next_state()) != state:
            assert entered is not None, f"the call ended before {state}; states: {self.states}"


@contextlib.asynccontextmanager
async def live_feed(served: Served, call_sid: str) -> AsyncIterator[Feed]:
    async with connect(f"{served.ws_url}/api/calls/{call_sid}/events", open_timeout=10) as ws:
        yield Feed(ws)


async def answer(http: httpx.AsyncClient, call_sid: str, body: dict[str, str]) -> None:
    """Say (text) or press (digits) something on the live call, through the dev-mode injection API."""
    response = await http.post(f"/api/calls/{call_sid}/caller", json=body)
    assert response.status_code == 202, response.text


async def heard(twilio: TwilioStreamClient, state: str, after: int) -> int:
    """Wait until the phone has played a prompt of ``state`` (a mark labelled with it, past ``after``)."""

    def played() -> bool:
        return any(mark.startswith(f"{state}#") for mark in twilio.played_marks[after:])

    await twilio.wait_until(played, timeout_s=CALL_TIMEOUT_S)
    return len(twilio.played_marks)


async def answer_booking(
    http: httpx.AsyncClient, twilio: TwilioStreamClient, feed: Feed, *, first: str | None = None
) -> None:
    """Answer each question of flows/booking.py once it has been heard, until the call ends."""
    cursor = 0
    state = first or await feed.next_state()
    while state is not None:
        if state in BOOKING_ANSWERS:
            cursor = await heard(twilio, state, cursor)
            await answer(http, twilio.call_sid, BOOKING_ANSWERS[state])
        state = await feed.next_state()


async def eventually(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout_s: float = 5.0
) -> T:
    """Re-request ``fetch()`` until ``done`` holds, bounded.

    Only for server state that offers nothing to await: the start of a drain, and a call's record
    once its end is written (records go through a queue, so they land just after the call ends).
    """
    seen: list[T] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not seen or not done(seen[-1]):
                seen[:] = [await fetch()]
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}; last seen: {seen}") from None
    return seen[-1]


async def read_call(http: httpx.AsyncClient, call_sid: str) -> dict[str, Any]:
    """The call's record, once its end is written."""

    async def fetch() -> dict[str, Any]:
        response = await http.get(f"/api/calls/{call_sid}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return await eventually(fetch, lambda r: r["outcome"] is not None and not r["live"], "the call's end")


@pytest.fixture
async def http_for() -> AsyncIterator[Callable[[Served], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(served: Served) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=served.url, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def check_booking_record(record: dict[str, Any]) -> None:
    """The call record of a completed flows/booking.py call answered with BOOKING_ANSWERS."""
    assert (record["flow"], record["caller"], record["direction"]) == ("Booking", CALLER, "inbound")
    assert (record["outcome"], record["final_state"]) == ("completed", "booked")
    assert dt.date.fromisoformat(record["slots"]["day"]).weekday() == 1  # a Tuesday
    assert (record["slots"]["time"][:5], record["slots"]["name"]) == ("10:00", "Alex")
    assert [step["target"] for step in record["path"]] == BOOKING_PATH
    said = [(turn["text"], turn["via"]) for turn in record["transcript"] if turn["speaker"] == "caller"]
    # Typed through the API (the fake caller's words arrive as text), keyed through the stream.
    assert said == [("tuesday", "text"), ("10 am", "text"), ("Alex", "text"), ("1", "dtmf")]
    agent = [turn["text"] for turn in record["transcript"] if turn["speaker"] == "agent"]
    assert agent[0] == "Hi, this is Bright Smile Dental."
    assert agent[-1].startswith("You're booked, Alex. See you on Tuesday")
    assert len(agent) == len(BOOKING_PROMPTS)
    for turn in record["transcript"]:
        assert turn["started_at"] <= turn["ended_at"]
    assert record["errors"] == []


async def test_serve_takes_a_twilio_call_to_a_booking_and_drains_on_sigterm(
    tmp_path: Path, http_for: Callable[[Served], httpx.AsyncClient]
) -> None:
    first, second, turned_away = ("CA" + digit * 32 for digit in "123")
    async with voicefsm_serve(tmp_path, str(BOOKING), VOICEFSM_DRAIN_TIMEOUT_S="25") as served:
        banner = "".join(served.banner)
        assert "dev mode" in banner and "STT local" in banner and "TTS local" in banner
        http = http_for(served)
        health = (await http.get("/healthz")).json()
        assert (health["status"], health["active_calls"], health["dev_mode"]) == ("ok", 0, True)

        # A booking, answered through the caller-injection API once each question has been heard.
        async with phone_call(served, http, first) as twilio, live_feed(served, first) as feed:
            await answer_booking(http, twilio, feed)
            assert await twilio.wait_closed(timeout_s=CALL_TIMEOUT_S) == 1000  # the agent hung up
        assert [mark.split("#")[0] for mark in twilio.played_marks] == BOOKING_PROMPTS  # each prompt heard
        assert len(twilio.agent_audio) > 8000  # seconds of synthesized speech, not a token
        check_booking_record(await read_call(http, first))
        metrics = (await http.get("/metrics")).text
        assert 'voicefsm_calls_total{outcome="completed"} 1.0' in metrics
        assert "voicefsm_active_calls 0.0" in metrics
        assert "voicefsm_turn_latency_seconds_count 4.0" in metrics  # one reply per answer
        listed = (await http.get("/api/calls")).json()
        assert [call["call_sid"] for call in listed] == [first]

        # SIGTERM with a call in progress: new calls are turned away, the live one may finish.
        async with phone_call(served, http, second) as twilio, live_feed(served, second) as feed:
            await feed.until_state("ask_day")
            served.process.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            health = await eventually(
                lambda: http.get("/healthz"),
                lambda r: r.json()["status"] == "draining",
                "the server to start draining",
            )
            assert health.json()["active_calls"] == 1
            refused = await ring(http, turned_away)
            assert refused.status_code == 200
            assert "<Hangup" in refused.text and "busy" in refused.text and "<Stream" not in refused.text
            await answer_booking(http, twilio, feed, first="ask_day")
            assert await twilio.wait_closed(timeout_s=CALL_TIMEOUT_S) == 1000
        assert await served.exit_code(timeout_s=10) == 0
        drained_in = time.monotonic() - sent_at
    assert feed.states[-1] == "booked"
    assert drained_in < 25, "the server waited for the drain deadline although its last call had ended"
    assert "still running at the drain deadline" not in served.stderr()
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'voicefsm.db'}")
    try:
        record = await store.get_call(second)
        assert await store.get_call(turned_away) is None
    finally:
        await store.aclose()
    assert record is not None and (record.outcome, record.final_state) == ("completed", "booked")

    # Both bookings are in the calendar table of the records database: the second got 09:30.
    booking_module = sys.modules[load_flow(BOOKING).__module__]
    calendar = await booking_module.SqlCalendar.open(f"sqlite+aiosqlite:///{tmp_path / 'voicefsm.db'}")
    try:
        booked = [(start.strftime("%A %H:%M"), name) for start, name in await calendar.all_bookings()]
    finally:
        await calendar.aclose()
    assert booked == [("Tuesday 09:30", "Alex"), ("Tuesday 10:00", "Alex")]


async def test_sigterm_ends_a_call_still_running_at_the_drain_deadline_and_exits_0(
    tmp_path: Path, http_for: Callable[[Served], httpx.AsyncClient]
) -> None:
    call_sid = "CA" + "4" * 32
    async with voicefsm_serve(tmp_path, str(BOOKING), VOICEFSM_DRAIN_TIMEOUT_S="0.5") as served:
        http = http_for(served)
        async with phone_call(served, http, call_sid) as twilio, live_feed(served, call_sid) as feed:
            await feed.until_state("ask_day")
            served.process.send_signal(signal.SIGTERM)
            assert await twilio.wait_closed(timeout_s=10) == 1000  # ended by the server, cleanly
        assert await served.exit_code(timeout_s=10) == 0
    assert "stopped; 1 call(s) were still running at the drain deadline and were ended" in served.stderr()
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'voicefsm.db'}")
    try:
        record = await store.get_call(call_sid)
    finally:
        await store.aclose()
    assert record is not None
    assert record.outcome == "hung_up" and record.ended_at is not None  # ended and recorded, not abandoned
    assert [step.target for step in record.path][-1] == "hung_up"


# -- validate ------------------------------------------------------------------------------------

NO_EXIT_ON_NO_INPUT = """
from pydantic import BaseModel
from voicefsm.flow import Ask, Hangup, VoiceFlow

class Day(BaseModel):
    day: str | None = None

class NoExit(VoiceFlow):
    slots_model = Day
    ask_day = Ask("Which day?", slot="day", initial=True)
    done = Hangup("Bye.")
    filled = ask_day.to(done)
    no_match = ask_day.to(done)
"""

UNREACHABLE = """
from voicefsm.flow import Ask, Hangup, Say, VoiceFlow, YesNo

class Lost(VoiceFlow):
    ask = Ask("Yes or no?", expect=YesNo(), initial=True)
    done = Hangup("Bye.")
    orphan = Say("Nobody gets here.")
    filled = ask.to(done)
    no_input = ask.to(done)
    no_match = ask.to(done)
    spoken = orphan.to(done)
"""

MISSING_SLOT = """
from pydantic import BaseModel
from voicefsm.flow import Ask, Hangup, VoiceFlow

class Day(BaseModel):
    day: str | None = None

class BadTemplate(VoiceFlow):
    slots_model = Day
    ask = Ask("Which day?", slot="day", initial=True)
    see_you = Hangup("See you at {time}.")
    filled = ask.to(see_you)
    no_input = ask.to(see_you)
    no_match = ask.to(see_you)
"""

# file name: (source, flow, state, event, what the message says)
BROKEN = {
    "no_exit.py": (NO_EXIT_ON_NO_INPUT, "NoExit", "ask_day", "no_input", "can wait forever"),
    "unreachable.py": (UNREACHABLE, "Lost", "orphan", None, "is unreachable"),
    "missing_slot.py": (MISSING_SLOT, "BadTemplate", "see_you", None, "names {time}"),
}
SHIPPED = sorted(FLOWS.glob("*.py"))


def test_validate_accepts_every_shipped_flow(tmp_path: Path) -> None:
    runs = run_all(
        *(("validate", str(flow)) for flow in SHIPPED), ("validate", str(BOOKING), "--json"), cwd=tmp_path
    )
    *plain, as_json = runs
    for flow, done in zip(SHIPPED, plain, strict=True):
        assert (done.returncode, done.stderr) == (0, ""), flow.name
        assert done.stdout.startswith("ok "), flow.name
        assert "every state is reachable and none can wait forever" in done.stdout
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["valid"] is True
    assert {"greet", "ask_day", "booked"} <= {state["id"] for state in report["spec"]["states"]}


def test_validate_fails_broken_flows_naming_file_state_and_fix(tmp_path: Path) -> None:
    for name, (source, *_) in BROKEN.items():
        (tmp_path / name).write_text(source)
    names = sorted(BROKEN)
    runs = run_all(
        *(("validate", str(tmp_path / name)) for name in names),
        *(("validate", str(tmp_path / name), "--json") for name in names),
        cwd=tmp_path,
    )
    for name, done, as_json in zip(names, runs[: len(names)], runs[len(names) :], strict=True):
        _, flow, state, event, problem = BROKEN[name]
        path = tmp_path / name
        assert (done.returncode, done.stdout) == (1, ""), name
        assert f"{path}:" in done.stderr and f"{flow}.{state}" in done.stderr, done.stderr
        assert problem in done.stderr and "Fix:" in done.stderr, done.stderr

        assert as_json.returncode == 1, name
        report = json.loads(as_json.stdout)
        assert report["valid"] is False
        (found,) = report["problems"]
        assert (found["path"], found["flow"], found["state"], found["event"]) == (
            str(path),
            flow,
            state,
            event,
        )
        assert problem in found["message"] and found["fix"] and isinstance(found["line"], int)


def test_validate_fails_a_file_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text("from voicefsm.flow import VoiceFlow\nclass Empty(VoiceFlow:\n")
    done, as_json = run_all(("validate", str(path)), ("validate", str(path), "--json"), cwd=tmp_path)
    assert done.returncode == 1 and str(path) in done.stderr
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["valid"] is False


# -- graph ---------------------------------------------------------------------------------------


def test_graph_writes_mermaid_for_every_shipped_flow(tmp_path: Path) -> None:
    outputs = [tmp_path / f"{flow.stem}.mmd" for flow in SHIPPED]
    runs = run_all(
        *(("graph", str(flow), "-o", str(out)) for flow, out in zip(SHIPPED, outputs, strict=True)),
        cwd=tmp_path,
    )
    for out, done in zip(outputs, runs, strict=True):
        assert (done.returncode, done.stderr) == (0, ""), out.name
        assert f"wrote {out} (mermaid)" in done.stdout
        text = out.read_text()
        assert text.startswith("stateDiagram-v2") and "[*] -->" in text, out.name


def test_graph_draws_svg_with_graphviz(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    out = tmp_path / "booking.svg"
    done = run_cli("graph", str(BOOKING), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    drawing = out.read_text()
    assert "<svg" in drawing and "ask_day" in drawing


def test_graph_without_graphviz_explains_and_the_format_must_be_known(tmp_path: Path) -> None:
    no_dot = tmp_path / "bin"  # a PATH with no `dot` on it, whatever this machine has installed
    no_dot.mkdir()
    svg = tmp_path / "booking.svg"
    missing, unknown = run_all(
        ("graph", str(BOOKING), "-o", str(svg)),
        ("graph", str(BOOKING), "-o", str(tmp_path / "chart.txt")),
        cwd=tmp_path,
        env=clean_env(PATH=str(no_dot)),
    )
    assert missing.returncode == 1
    assert "needs Graphviz's `dot` program" in missing.stderr and ".mmd" in missing.stderr
    assert not svg.exists()
    assert unknown.returncode == 2 and "cannot tell the format from chart.txt" in unknown.stderr


# -- version and call ----------------------------------------------------------------------------


def test_version_and_call_without_credentials(tmp_path: Path) -> None:
    version, no_url, no_credentials = run_all(
        ("--version",),
        ("call", "+15551230001", str(BOOKING)),
        ("call", "+15551230001", str(BOOKING), "--public-url", "https://voice.example.test"),
        cwd=tmp_path,
    )
    assert (version.returncode, version.stdout) == (0, f"voicefsm {__version__}\n")
    assert no_url.returncode == 2
    assert "no public URL is configured" in no_url.stderr and "--public-url" in no_url.stderr
    assert no_credentials.returncode == 2
    assert "TWILIO_ACCOUNT_SID" in no_credentials.stderr and "TWILIO_AUTH_TOKEN" in no_credentials.stderr
    assert "Traceback" not in no_url.stderr + no_credentials.stderr
