"""The bridge: flows/patient.py phones flows/booking.py and books, in-process and between two servers."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voicefsm.flow import Ask, Choice, Hangup, VoiceFlow, check_flow, load_flow
from voicefsm.testing.bridge import (
    BridgeLine,
    BridgeStuckError,
    CallerScript,
    bridge_flows,
    bridge_servers,
)

REPO = Path(__file__).resolve().parents[2]
BOOKING_FILE = REPO / "flows" / "booking.py"
PATIENT_FILE = REPO / "flows" / "patient.py"
MONDAY = dt.date(2024, 6, 3)
BOOKED_PATH = ("greet", "ask_day", "ask_time", "ask_name", "confirm", "check", "book", "booked")
PATIENT_PATH = ("ask_for_tuesday", "give_time", "give_name", "agree", "thank")
READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:\d+)")
STARTUP_S = 30  # start-up is mostly imports: seconds on a busy machine

Booking = load_flow(BOOKING_FILE)
Patient = load_flow(PATIENT_FILE)


class Mumbler(VoiceFlow):
    """A caller who answers every question with the same thing the agent cannot use."""

    mumble = Ask(
        "Mm, hmm.", expect=Choice({"bye": ["goodbye"]}), reprompt="Mm, hmm.", initial=True, retries=100
    )
    bye = Hangup("Bye.")

    filled = mumble.to(bye)
    no_input = mumble.to(bye)
    no_match = mumble.to(bye)


class Stubborn(VoiceFlow):
    """A booking line that re-asks for ever (to prove the bridge gives up, naming the states)."""

    ask = Ask("Please say the magic word.", expect=Choice({"magic": ["abracadabra"]}), initial=True,
              retries=1000)  # fmt: skip
    done = Hangup("Well done.")

    filled = ask.to(done)
    no_input = ask.to(done)
    no_match = ask.to(done)


def test_the_patient_flow_passes_the_static_checks() -> None:
    assert check_flow(Patient) == []


async def test_the_patient_books_in_process_as_it_said() -> None:
    result = await bridge_flows(Booking, Patient, today=MONDAY)

    assert (result.agent.outcome, result.agent.final_state) == ("completed", "booked")
    assert result.agent.path == BOOKED_PATH
    assert result.agent.slots == {
        "day": dt.date(2024, 6, 4),
        "time": dt.time(10, 30),
        "name": "Alex Morgan",
        "offered": None,
    }
    assert result.caller.path == PATIENT_PATH and result.caller.outcome == "completed"
    # Each side heard the other's words, in turn: the caller joined once asked, after the greeting.
    assert result.conversation[:3] == (
        BridgeLine("agent", "Hi, this is Bright Smile Dental."),
        BridgeLine("agent", "Which day would you like to come in?"),
        BridgeLine("caller", "Hi, I'd like to book a check-up on Tuesday, please."),
    )
    heard_by_agent = [line.text for line in result.agent.transcript if line.speaker == "caller"]
    said_by_patient = [line.text for line in result.caller.transcript if line.speaker == "agent"]
    assert heard_by_agent == said_by_patient[: len(heard_by_agent)] and len(heard_by_agent) == 4
    assert result.agent.errors == () and result.caller.errors == ()
    assert 10 < result.duration_s < 60  # simulated: about 15 characters of speech a second


async def test_a_caller_the_agent_cannot_understand_ends_the_call_politely() -> None:
    result = await bridge_flows(Booking, Mumbler, today=MONDAY)

    assert result.agent.outcome == "gave_up"
    assert result.agent.path == ("greet", "ask_day", "give_up")
    mumbles = [line for line in result.conversation if line.speaker == "caller"]
    assert mumbles == [BridgeLine("caller", "Mm, hmm.")] * 3  # asked, then re-asked twice
    assert result.caller.outcome == "hung_up"  # the agent hung up on it


async def test_a_conversation_that_never_ends_fails_naming_each_sides_state() -> None:
    with pytest.raises(BridgeStuckError) as stuck:
        await bridge_flows(Stubborn, Mumbler, today=MONDAY, max_call_s=120)

    assert (stuck.value.agent_state, stuck.value.caller_state) == ("ask", "mumble")
    assert "120 simulated seconds" in str(stuck.value) and "agent was in ask" in str(stuck.value)


BOOKING_SCRIPT = CallerScript(["next Tuesday", "half past ten", "Ada Lovelace", "yes"])


async def test_a_script_caller_books_in_process() -> None:
    result = await bridge_flows(Booking, BOOKING_SCRIPT, today=MONDAY)

    assert (result.agent.outcome, result.agent.path) == ("completed", BOOKED_PATH)
    assert result.agent.slots == {
        "day": dt.date(2024, 6, 11),
        "time": dt.time(10, 30),
        "name": "Ada Lovelace",
        "offered": None,
    }
    assert [line.text for line in result.conversation if line.speaker == "caller"] == list(
        BOOKING_SCRIPT.lines
    )
    assert (result.caller.flow, result.caller.outcome) == ("CallerScript", "completed")
    assert result.caller.transcript[:2] == (
        BridgeLine("agent", "next Tuesday"),
        BridgeLine("caller", "What time on Tuesday?"),
    )


async def test_a_script_keeps_silent_on_none_and_hangs_up_once_it_runs_out() -> None:
    result = await bridge_flows(Booking, CallerScript([None, "Tuesday"]), today=MONDAY)

    assert [(line.speaker, line.text) for line in result.conversation[2:]] == [
        ("agent", "Sorry, I didn't hear anything. Which day would you like to come in?"),
        ("caller", "Tuesday"),
        ("agent", "What time on Tuesday?"),
    ]
    assert (result.agent.outcome, result.agent.path[-1]) == ("hung_up", "hung_up")
    assert result.caller.outcome == "completed"
    with pytest.raises(TypeError, match="list of lines"):
        CallerScript("next Tuesday")


# -- over loopback, between two `voicefsm serve` ---------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """Where the booking line and the patient listen."""

    booking: str
    patient: str


def clean_env() -> dict[str, str]:
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


@contextlib.contextmanager
def voicefsm_serve(flow_file: Path, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start ``voicefsm serve FLOW`` with scripted providers on a free port; kill it on exit."""
    stderr_path = workdir / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "voicefsm", "serve", str(flow_file), "--port", "0",
             "--stt", "scripted", "--tts", "scripted", "--db", f"sqlite+aiosqlite:///{workdir / 'calls.db'}"],
            cwd=workdir, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            yield process, stderr_path
        finally:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def listening_url(process: subprocess.Popen[bytes], stderr_path: Path, deadline: float) -> str:
    """The URL ``serve`` prints once it listens, read from its stdout as it comes, by ``deadline``."""
    assert process.stdout is not None
    fd, banner = process.stdout.fileno(), b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not (ready := READY.search(banner.decode(errors="replace"))):
            if not selector.select(deadline - time.monotonic()):
                raise AssertionError(f"serve printed no URL in {STARTUP_S} s: {banner!r}")
            if not (chunk := os.read(fd, 4096)):
                raise AssertionError(f"serve exited before listening:\n{stderr_path.read_text()}")
            banner += chunk
    return ready.group(1)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The booking line and the patient, each a ``voicefsm serve``: started side by side, once."""
    with contextlib.ExitStack() as stack:
        booking = stack.enter_context(voicefsm_serve(BOOKING_FILE, tmp_path_factory.mktemp("booking")))
        patient = stack.enter_context(voicefsm_serve(PATIENT_FILE, tmp_path_factory.mktemp("patient")))
        deadline = time.monotonic() + STARTUP_S
        yield Servers(listening_url(*booking, deadline), listening_url(*patient, deadline))


async def test_the_patient_books_over_loopback_between_two_servers(servers: Servers) -> None:
    result = await bridge_servers(servers.booking, servers.patient, limit_s=15)

    booking = result.agent
    assert (booking.flow, booking.outcome, booking.final_state) == ("Booking", "completed", "booked")
    assert booking.path == BOOKED_PATH
    day = dt.date.fromisoformat(booking.slots["day"])
    assert (
        day.weekday() == 1 and booking.slots["time"] == "10:30:00" and booking.slots["name"] == "Alex Morgan"
    )
    assert [line.text for line in booking.transcript if line.speaker == "caller"] == [
        "Hi, I'd like to book a check-up on Tuesday, please.",
        "Half past ten in the morning, please.",
        "Alex Morgan",
        "Yes, please.",
    ]
    assert (result.caller.flow, result.caller.outcome, result.caller.path) == (
        "Patient",
        "completed",
        PATIENT_PATH,
    )
    assert result.duration_s < 5  # instant playback: the exchange itself takes about half a second
    # The two servers' event feeds are read independently, so the agent's goodbye and the patient's
    # "bye" (said over it) may reach the bridge in either order: the agent's last line is what is certain.
    assert [line for line in result.conversation if line.speaker == "agent"][-1] == BridgeLine(
        "agent", f"You're booked, Alex Morgan. See you on {day:%A}. Goodbye!"
    )


async def test_a_script_caller_books_over_loopback(servers: Servers) -> None:
    result = await bridge_servers(servers.booking, BOOKING_SCRIPT, limit_s=15)

    assert (result.agent.outcome, result.agent.path) == ("completed", BOOKED_PATH)
    assert (result.agent.slots["time"], result.agent.slots["name"]) == ("10:30:00", "Ada Lovelace")
    assert [line.text for line in result.agent.transcript if line.speaker == "caller"] == list(
        BOOKING_SCRIPT.lines
    )
    assert (result.caller.flow, result.caller.outcome) == ("CallerScript", "completed")


async def test_a_loopback_call_nobody_answers_fails_naming_each_sides_state(servers: Servers) -> None:
    with pytest.raises(BridgeStuckError) as stuck:  # the booking line waits 6 s before it re-asks
        await bridge_servers(servers.booking, CallerScript([], hang_up=False), limit_s=2)

    assert (stuck.value.agent_state, stuck.value.caller_state) == ("ask_day", "script, after its lines")
    assert stuck.value.conversation == [
        BridgeLine("agent", "Hi, this is Bright Smile Dental."),
        BridgeLine("agent", "Which day would you like to come in?"),
    ]
    assert "within 2 s: the agent was in ask_day" in str(stuck.value)
