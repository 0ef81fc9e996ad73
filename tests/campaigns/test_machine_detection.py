"""A served call hears Twilio's async AMD verdict while its stream runs: a machine gets the voicemail."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from voicefsm.flow.loader import load_flow
from voicefsm.server.amd import deliver_verdict
from voicefsm.server.launch import plan, serving
from voicefsm.server.registry import CallRegistry
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient

FLOWS = Path(__file__).resolve().parents[2] / "flows"
ROW = {"name": "Ada", "day": "2024-06-05", "time": "09:30", "appointment_id": "A-1001"}


def settings_for(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        VOICEFSM_RECORDINGS_DIR="",
        VOICEFSM_FAKE_RESOURCES="1",
    )


async def records(tmp_path: Path, call_sid: str) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    try:
        async with engine.connect() as db:
            sid = {"sid": call_sid}
            outcome = (
                await db.execute(text("SELECT outcome FROM calls WHERE call_sid = :sid"), sid)
            ).scalar()
            notes = [
                (row.kind, row.message)
                for row in await db.execute(
                    text("SELECT kind, message FROM errors WHERE call_sid = :sid"), sid
                )
            ]
            events = [
                row.event
                for row in await db.execute(
                    text("SELECT event FROM transitions WHERE call_sid = :sid ORDER BY seq"), sid
                )
            ]
    finally:
        await engine.dispose()
    return outcome, notes, events


async def test_a_machine_answering_a_served_reminder_call_gets_the_voicemail(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    chosen = plan(settings, load_flow(FLOWS / "reminder.py"), stt="scripted", tts="scripted")
    call_sid = "CA" + "a" * 32
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        webhook = await http.post("/twilio/voice", data={"CallSid": call_sid, "To": "+15550001234"})
        token = webhook.text.split('name="token" value="')[1].split('"')[0]
        parameters = {**ROW, "token": token}
        stream = TwilioStreamClient(
            f"{server.ws_url}/twilio/stream", call_sid=call_sid, custom_parameters=parameters
        )
        async with stream:
            await stream.wait_for(
                "mark", timeout_s=10
            )  # the greeting has played: the machine's greeting goes on
            verdict = {
                "CallSid": call_sid,
                "AnsweredBy": "machine_end_beep",
                "MachineDetectionDuration": "4100",
            }
            assert (await http.post("/twilio/status", data=verdict)).status_code == 204
            await stream.wait_closed(timeout_s=10)  # the voicemail is left, and the call hung up
        await app.state.voicefsm.registry.idle.wait()
    outcome, notes, events = await records(tmp_path, call_sid)
    assert outcome == "voicemail"
    assert ("amd", "answering-machine detection: answered by machine_end_beep") in notes
    assert events[-1] == "machine_answered"


async def test_a_human_verdict_changes_nothing_and_the_call_goes_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    chosen = plan(settings, load_flow(FLOWS / "reminder.py"), stt="scripted", tts="scripted")
    call_sid = "CA" + "b" * 32
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        webhook = await http.post("/twilio/voice", data={"CallSid": call_sid, "To": "+15550001234"})
        token = webhook.text.split('name="token" value="')[1].split('"')[0]
        stream = TwilioStreamClient(
            f"{server.ws_url}/twilio/stream", call_sid=call_sid, custom_parameters={**ROW, "token": token}
        )
        async with stream:
            await stream.wait_for("mark", timeout_s=10)
            verdict = {"CallSid": call_sid, "AnsweredBy": "human"}
            assert (await http.post("/twilio/status", data=verdict)).status_code == 204
            await stream.wait_for("mark", count=2, timeout_s=10)  # the question has been asked
            await stream.press("1")  # confirms
            await stream.wait_closed(timeout_s=10)
        await app.state.voicefsm.registry.idle.wait()
    outcome, notes, _ = await records(tmp_path, call_sid)
    assert outcome == "confirmed"
    assert ("amd", "answering-machine detection: answered by human") in notes


def test_a_verdict_for_no_live_call_or_of_a_strange_shape_is_dropped() -> None:
    registry = CallRegistry(require_token=False)
    assert not deliver_verdict(registry, {"CallSid": "CA" + "c" * 32, "AnsweredBy": "machine_end_beep"})
    assert not deliver_verdict(registry, {"CallSid": "CA" + "c" * 32})
    assert not deliver_verdict(registry, {"CallSid": "CA" + "c" * 32, "AnsweredBy": "<script>" * 10})
