"""The bridge: flows/patient.py phones flows/booking.py and books, in-process and between two servers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voicefsm.flow import Ask, Choice, Hangup, VoiceFlow, check_flow, load_flow
from voicefsm.testing.bridge import BridgeLine, BridgeStuckError, bridge_flows, bridge_servers

REPO = Path(__file__).resolve().parents[2]
BOOKING_FILE = REPO / "flows" / "booking.py"
PATIENT_FILE = REPO / "flows" / "patient.py"
MONDAY = dt.date(2024, 6, 3)
BOOKED_PATH = ("greet", "ask_day", "ask_time", "ask_name", "confirm", "booked")
PATIENT_PATH = ("ask_for_tuesday", "give_time", "give_name", "agree", "thank")
READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:\d+)")
STARTUP_S = 20

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
    assert result.agent.slots == {"day": dt.date(2024, 6, 4), "time": dt.time(10, 30), "name": "Alex Morgan"}
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


# -- over loopback, between two `voicefsm serve` ---------------------------------------------------


def clean_env() -> dict[str, str]:
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


@contextlib.asynccontextmanager
async def voicefsm_serve(flow_file: Path, workdir: Path, *args: str) -> AsyncIterator[str]:
    """``voicefsm serve FLOW ARGS`` with scripted providers on a free port; yields its URL once it listens."""
    await asyncio.to_thread(workdir.mkdir)
    stderr_path = workdir / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicefsm", "serve", str(flow_file), *args, "--port", "0",
            "--stt", "scripted", "--tts", "scripted", "--db", f"sqlite+aiosqlite:///{workdir / 'calls.db'}",
            cwd=workdir, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            try:
                async with asyncio.timeout(STARTUP_S):
                    while not (ready := READY.search((await process.stdout.readline()).decode())):
                        if process.stdout.at_eof():
                            raise AssertionError(f"serve exited before listening:\n{stderr_path.read_text()}")
            except TimeoutError:
                raise AssertionError(f"serve printed no URL in {STARTUP_S} s") from None
            yield ready.group(1)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def two_servers(
    tmp_path: Path, agent: tuple[Path, ...] | tuple[Path, str], caller: tuple[Path, ...] | tuple[Path, str]
) -> AsyncIterator[tuple[str, str]]:
    """Two ``voicefsm serve`` started side by side (start-up dominates); yields their URLs."""
    async with contextlib.AsyncExitStack() as stack:
        agent_url, caller_url = await asyncio.gather(
            stack.enter_async_context(voicefsm_serve(agent[0], tmp_path / "agent", *_flow_option(agent))),
            stack.enter_async_context(voicefsm_serve(caller[0], tmp_path / "caller", *_flow_option(caller))),
        )
        yield agent_url, caller_url


def _flow_option(spec: tuple[Path, ...] | tuple[Path, str]) -> tuple[str, ...]:
    return ("--flow", str(spec[1])) if len(spec) > 1 else ()


async def test_the_patient_books_over_loopback_between_two_servers(tmp_path: Path) -> None:
    async with two_servers(tmp_path, (BOOKING_FILE,), (PATIENT_FILE,)) as (booking_url, patient_url):
        result = await bridge_servers(booking_url, patient_url, limit_s=15)

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
    assert result.duration_s < 5  # instant playback: the exchange itself takes about a second
    assert result.conversation[-1] == BridgeLine(
        "agent", f"You're booked, Alex Morgan. See you on {day:%A}. Goodbye!"
    )


async def test_a_loopback_conversation_that_never_ends_fails_naming_each_sides_state(tmp_path: Path) -> None:
    this_file = Path(__file__)
    async with two_servers(tmp_path, (this_file, "Stubborn"), (this_file, "Mumbler")) as (
        agent_url,
        caller_url,
    ):
        with pytest.raises(BridgeStuckError) as stuck:
            await bridge_servers(agent_url, caller_url, limit_s=1.0)

    assert (stuck.value.agent_state, stuck.value.caller_state) == ("ask", "mumble")
    assert stuck.value.conversation[:2] == [
        BridgeLine("agent", "Please say the magic word."),
        BridgeLine("caller", "Mm, hmm."),
    ]
