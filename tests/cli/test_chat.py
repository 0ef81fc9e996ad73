"""``voicefsm chat``: the terminal line in process, and the command driven through stdin in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from pydantic import BaseModel
from rich.console import Console

from voicefsm.cli import chat_session
from voicefsm.flow import Ask, Digits, Hangup, Say, VoiceFlow, fakes_for
from voicefsm.flow.loader import load_flow
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.runtime.chat import CHAT_CALLER
from voicefsm.runtime.clock import ManualClock
from voicefsm.runtime.flow_runtime import FlowListener, FlowResult, Turn
from voicefsm.transports.terminal import (
    HELP,
    Help,
    Invalid,
    Keys,
    Leave,
    Silence,
    Speech,
    StdinLines,
    parse_input,
)

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows"
MONDAY = dt.date(2024, 6, 3)
SUBPROCESS_TIMEOUT_S = 30

BOOKING_SCRIPT = ["tuesday", "10 am", "Alex", "/1"]
BOOKING_TRANSCRIPT = """\
  -> greet (start)
agent: Hi, this is Bright Smile Dental.
  -> ask_day (spoken)
agent: Which day would you like to come in?
caller: tuesday
  = day: 2024-06-04
  -> ask_time (filled)
agent: What time on Tuesday?
caller: 10 am
  = time: 10:00
  -> ask_name (filled)
agent: And what name should I put the booking under?
caller: Alex
  = name: Alex
  -> confirm (filled)
agent: Alex, that's Tuesday at 10:00. Shall I book it? Say yes or press 1, or no or press 2.
caller: [presses 1]
  -> check (filled)
  -> book (free)
  -> booked (saved)
agent: You're booked, Alex. See you on Tuesday. Goodbye!
call ended: completed in booked; agent hung up
slots: day=2024-06-04, time=10:00, name=Alex
"""


class PinSlots(BaseModel):
    pin: str | None = None


class Pin(VoiceFlow):
    """Keypad entry: two to six digits, ended by # or by a pause."""

    slots_model = PinSlots

    ask_pin = Ask("Your code, then hash.", slot="pin", expect=Digits(min_len=2, max_len=6), initial=True)
    done = Hangup("Thanks.")
    give_up = Hangup("Goodbye.", outcome="gave_up")

    filled = ask_pin.to(done)
    no_input = ask_pin.to(give_up)
    no_match = ask_pin.to(give_up)


class SlowPin(VoiceFlow):
    """Checks the code with an awaited lookup (real time, which the chat's clock knows nothing of)."""

    slots_model = PinSlots

    ask_pin = Ask("Your code, then hash.", slot="pin", expect=Digits(min_len=2, max_len=6), initial=True)
    again = Ask("Found it. Your second code, then hash.", slot="pin", expect=Digits(min_len=2, max_len=6))
    done = Hangup("Thanks.")
    give_up = Hangup("Goodbye.", outcome="gave_up")

    filled = ask_pin.to(again, cond="looked_up") | ask_pin.to(give_up) | again.to(done)
    no_input = ask_pin.to(give_up) | again.to(give_up)
    no_match = ask_pin.to(give_up) | again.to(give_up)

    async def looked_up(self) -> bool:
        await asyncio.sleep(0.05)  # a network lookup: real time, which the chat clock knows nothing of
        return True


class Announcement(VoiceFlow):
    """Never asks anything: the call ends without the caller's input."""

    hello = Say("The office is closed today.", initial=True)
    bye = Hangup("Goodbye.")

    spoken = hello.to(bye)


# -- helpers ------------------------------------------------------------------------------------


async def lines_of(lines: Iterable[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


class Turns(FlowListener):
    def __init__(self) -> None:
        self.turns: list[Turn] = []

    def on_turn(self, turn: Turn) -> None:
        self.turns.append(turn)


async def chat(
    flow: type[VoiceFlow] | str,
    lines: Iterable[str],
    *,
    interactive: bool = False,
    listeners: tuple[FlowListener, ...] = (),
) -> tuple[str, FlowResult]:
    """Run a chat in process; returns what the terminal showed and how the call ended."""
    flow_class = load_flow(FLOWS / flow) if isinstance(flow, str) else flow
    screen = io.StringIO()
    console = Console(file=screen, width=100, highlight=False, soft_wrap=True, force_terminal=False)
    async with asyncio.timeout(10):
        result = await chat_session(
            flow_class,
            lines_of(lines),
            console,
            today=MONDAY,
            interactive=interactive,
            listeners=listeners,
            resources=fakes_for(flow_class),  # in process: the flow's declared fakes
        )
    return screen.getvalue(), result


def clean_env() -> dict[str, str]:
    """The environment without any credentials or voicefsm settings the developer may have set."""
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def run_cli(*args: str, cwd: Path, stdin: str | io.BufferedReader = "") -> subprocess.CompletedProcess[str]:
    """Run ``voicefsm ARGS`` to the end; ``stdin`` is the text piped in, or an open file."""
    return subprocess.run(
        [sys.executable, "-m", "voicefsm", *args],
        input=stdin if isinstance(stdin, str) else None,
        stdin=None if isinstance(stdin, str) else stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


# -- typed lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "meaning"),
    [
        ("  next tuesday  ", Speech("next tuesday")),
        ("/1", Keys("1")),
        ("/123#", Keys("123#")),
        ("/*9A", Keys("*9A")),
        ("/silence", Silence()),
        ("/SILENCE", Silence()),
        ("/hangup", Leave()),
        ("/help", Help()),
        ("", None),
        ("   ", None),
    ],
)
def test_typed_lines_mean_speech_keys_or_commands(line: str, meaning: object) -> None:
    assert parse_input(line) == meaning


@pytest.mark.parametrize("line", ["/bad", "/12x", "/", "/ hang up"])
def test_a_slash_line_that_is_no_command_is_invalid_not_keys(line: str) -> None:
    parsed = parse_input(line)
    assert isinstance(parsed, Invalid)
    assert "/silence" in parsed.problem


# -- the clock ------------------------------------------------------------------------------------


async def test_the_terminal_clock_moves_only_when_told() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(s)) for s in (6.0, 3.0)]
    doomed = asyncio.create_task(clock.sleep(1.0))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.wait([doomed])
    for _ in range(20):
        await asyncio.sleep(0)  # an idle loop does not move this clock
    assert (woke, clock.now(), clock.pending) == ([], 0.0, 2)

    assert clock.skip() == 3.0  # the cancelled 1 s sleeper is skipped over, not woken at
    await asyncio.wait([tasks[1]])
    clock.advance_to(2.0)  # never backwards
    assert clock.now() == 3.0
    clock.advance_to(10.0)
    await asyncio.wait(tasks)
    assert woke == [3.0, 10.0]
    assert clock.skip() is None


# -- the terminal line, in process ----------------------------------------------------------------


async def test_a_typed_booking_completes_with_a_readable_transcript() -> None:
    screen, result = await chat("booking.py", BOOKING_SCRIPT)
    assert screen == BOOKING_TRANSCRIPT
    assert result.outcome == "completed" and result.final_state == "booked"
    assert result.slots == {
        "day": MONDAY + dt.timedelta(days=1),
        "time": dt.time(10),
        "name": "Alex",
        "offered": None,
    }


async def test_agent_audio_takes_its_length_and_silence_takes_the_no_input_time() -> None:
    turns = Turns()
    _, result = await chat("booking.py", ["/silence", "tuesday", "/hangup"], listeners=(turns,))
    greet, ask, reprompt, answer, ask_time = turns.turns
    tts = ScriptedTextToSpeech()
    for turn in (greet, ask, reprompt, ask_time):
        assert turn.end_s - turn.start_s == pytest.approx(tts.audio_bytes_for(turn.text) / 8000)
    assert (greet.start_s, ask.start_s) == (0.0, greet.end_s)
    assert reprompt.text.startswith("Sorry, I didn't hear anything")
    assert reprompt.start_s == pytest.approx(ask.end_s + 6.0)  # Ask's default no_input_s
    assert (answer.speaker, answer.text, answer.start_s) == ("caller", "tuesday", reprompt.end_s)
    assert result.outcome == "hung_up"


async def test_silence_until_the_retries_run_out_gives_up() -> None:
    screen, result = await chat("booking.py", ["/silence"] * 3)
    assert screen.count("agent: Sorry, I didn't hear anything. Which day") == 2
    assert "  -> give_up (no_input)\n" in screen
    assert (result.outcome, result.final_state) == ("gave_up", "give_up")


async def test_keys_are_collected_until_the_hash_or_until_silence_ends_the_pause() -> None:
    _, result = await chat(Pin, ["/12", "/34#"])
    assert (result.outcome, result.slots) == ("completed", {"pin": "1234"})
    _, result = await chat(Pin, ["/56", "/silence"])  # the keypad pause (inter-digit timer) runs out
    assert (result.outcome, result.slots) == ("completed", {"pin": "56"})


async def test_transfers_and_text_messages_are_shown_not_sent() -> None:
    screen, result = await chat("ivr_menu.py", ["/1"])
    assert "  * transfer to +15550100001\n" in screen
    assert result.outcome == "transferred"
    screen, result = await chat("survey.py", ["/4", "yes", "the parking"])
    body = "rating 4 of 5; would recommend: yes; comment: the parking."
    assert f"  * text to {CHAT_CALLER}: Your survey answers: {body} Thank you!\n" in screen
    assert result.outcome == "completed"


async def test_a_machine_typed_in_chat_gets_the_reminders_voicemail_and_a_person_does_not() -> None:
    screen, result = await chat("reminder.py", ["hi, leave a message after the tone", "/machine"])
    assert "caller: [a machine: machine_end_beep]\n" in screen
    assert "  ~ answering-machine detection: answered by machine_end_beep\n" in screen
    assert "  -> voicemail (machine_answered)\n" in screen
    assert (result.outcome, result.final_state) == ("voicemail", "voicemail")
    screen, result = await chat("reminder.py", ["/machine human", "/1"])
    assert result.outcome == "confirmed"
    screen, result = await chat("reminder.py", ["/machine <b>", "/hangup"])
    assert "/machine <b>: a verdict is a word such as machine_end_beep, human or fax\n" in screen


async def test_the_reminder_flow_chats_without_a_campaign_row() -> None:
    screen, result = await chat("reminder.py", ["/3", "Thursday", "half past two"])
    assert "agent: Hello, this is Bright Smile Dental calling about your appointment with us.\n" in screen
    assert "agent: Done: your appointment is now on Thursday at 14:30. See you then. Goodbye!\n" in screen
    assert (result.outcome, result.slots["day"]) == ("rescheduled", dt.date(2024, 6, 6))


@pytest.mark.parametrize(
    ("last", "reason"), [(["/hangup"], "caller hung up"), ([], "end of input: caller hung up")]
)
async def test_hanging_up_or_running_out_of_input_ends_the_call(last: list[str], reason: str) -> None:
    screen, result = await chat("booking.py", ["tuesday", *last])
    assert result.outcome == "hung_up"
    assert result.slots["day"] == MONDAY + dt.timedelta(days=1)
    assert screen.endswith(f"call ended: hung_up in hung_up; {reason}\nslots: day=2024-06-04\n")


async def test_a_piped_line_waits_for_the_flow_to_listen_again_after_an_awaited_lookup() -> None:
    screen, result = await chat(SlowPin, ["/12#", "/34#"])
    assert (result.outcome, result.final_state, result.slots) == ("completed", "done", {"pin": "34"})
    assert screen.index("caller: [presses 34#]") > screen.index("agent: Found it.")


async def test_help_typos_and_blank_lines_reach_the_terminal_not_the_call() -> None:
    screen, result = await chat("booking.py", ["/help", "/bad", "", "/hangup"])
    assert HELP in screen
    assert "/bad: not a command" in screen
    assert "Sorry" not in screen  # nothing was taken as an answer or as silence
    assert result.path[-1].source == "ask_day"


async def test_silence_runs_out_an_echo_and_the_agent_hangs_up() -> None:
    screen, _ = await chat("echo.py", ["/silence", "/silence"])
    # The first /silence runs out the echo's ten minutes; the call is over before the second.
    assert "call ended: completed in echo; agent hung up" in screen


async def test_a_flow_that_asks_nothing_ends_without_reading_input() -> None:
    async def never() -> AsyncIterator[str]:
        raise AssertionError("the chat read input although the flow never listened")
        yield ""  # pragma: no cover

    screen = io.StringIO()
    console = Console(file=screen, width=100, force_terminal=False)
    async with asyncio.timeout(10):
        result = await chat_session(Announcement, never(), console)
    assert result.outcome == "completed"
    assert "agent: Goodbye." in screen.getvalue()


async def test_interactive_mode_prompts_for_each_answer_and_does_not_echo_it() -> None:
    screen, result = await chat("booking.py", BOOKING_SCRIPT, interactive=True)
    assert result.outcome == "completed"
    assert screen.count("caller> ") == len(BOOKING_SCRIPT)
    assert "caller: " not in screen
    assert screen.index("caller> ") > screen.index("agent: Which day")


async def test_stdin_lines_reads_a_pipe_in_whole_utf8_lines() -> None:
    read_fd, write_fd = os.pipe()
    try:
        lines = StdinLines(read_fd)
        word = "Zoë".encode()
        os.write(write_fd, b"tuesday\r\n10 am\n" + word[:3])  # the 'ë' is split across two writes
        assert [await anext(lines), await anext(lines)] == ["tuesday", "10 am"]
        os.write(write_fd, word[3:] + b"\nno newline at the end")
        os.close(write_fd)
        write_fd = -1
        assert [line async for line in lines] == ["Zoë", "no newline at the end"]
        with pytest.raises(StopAsyncIteration):
            await anext(lines)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


# -- the command, through a subprocess -------------------------------------------------------------


def test_chat_piped_from_stdin_completes_a_booking(tmp_path: Path) -> None:
    script = "".join(f"{line}\n" for line in BOOKING_SCRIPT)
    done = run_cli("chat", str(FLOWS / "booking.py"), "--today", "2024-06-03", cwd=tmp_path, stdin=script)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == BOOKING_TRANSCRIPT  # no prompts, no colour codes: the same as in process
    # The booking is a row of the calendar table in the records database (./voicefsm.db by default).
    with contextlib.closing(sqlite3.connect(tmp_path / "voicefsm.db")) as db:
        rows = db.execute("SELECT starts_at, name FROM calendar_bookings").fetchall()
    assert [(starts[:16], name) for starts, name in rows] == [("2024-06-04 10:00", "Alex")]


def test_chat_reads_a_script_file_with_windows_line_endings(tmp_path: Path) -> None:
    script = tmp_path / "booking.txt"
    script.write_bytes("".join(f"{line}\r\n" for line in BOOKING_SCRIPT).encode())
    with script.open("rb") as handle:
        done = run_cli("chat", str(FLOWS / "booking.py"), "--today", "2024-06-03", cwd=tmp_path, stdin=handle)
    assert done.returncode == 0, done.stderr
    assert done.stdout == BOOKING_TRANSCRIPT


def test_chat_rejects_a_malformed_date(tmp_path: Path) -> None:
    done = run_cli("chat", str(FLOWS / "booking.py"), "--today", "03/06/2024", cwd=tmp_path, stdin="")
    assert done.returncode == 2
    assert "--today '03/06/2024' is not a date; write it as YYYY-MM-DD" in done.stderr


async def test_a_typed_turn_is_recorded_as_typed_and_keys_as_keys() -> None:
    seen = Turns()
    _, result = await chat("booking.py", ["tuesday", "10 am", "Ada", "/1"], listeners=(seen,))
    assert result.outcome == "completed"
    caller = [(turn.text, turn.via) for turn in seen.turns if turn.speaker == "caller"]
    assert caller == [("tuesday", "text"), ("10 am", "text"), ("Ada", "text"), ("1", "dtmf")]
