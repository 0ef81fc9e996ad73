"""A campaign of the reminder flow: the calls connect, each row's values reach its call, machines get
the voicemail (Twilio's async AMD verdict arrives while the stream runs), people confirm or cancel.

One ``voicefsm serve``-equivalent server in this process (records and campaigns on PostgreSQL, Twilio
credentials pointing at the REST stand-in, signed callbacks and streams); the stand-in follows each
answered call's TwiML to the voice webhook and opens its media stream, as Twilio does.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from twilio_calls import TwilioCalls

from voicefsm.flow.loader import load_flow
from voicefsm.records.dburl import database_url
from voicefsm.server.launch import plan, serving
from voicefsm.settings import Settings

FLOW = Path(__file__).resolve().parents[2] / "flows" / "reminder.py"
API_TOKEN = "reminder-campaign-token"
ROWS = [
    ("+15552000001", "Ada", "1"),  # confirms
    ("+15552000002", "Grace", "machine"),
    ("+15552000003", "Alan", "1"),
    ("+15552000004", "Edsger", "machine"),
    ("+15552000005", "Barbara", "21"),  # cancel, then "yes, cancel it" by key 1
    ("+15552000006", "Donald", "busy"),  # busy once, then confirms on the retry
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_reminder_campaign_leaves_voicemails_on_machines_and_asks_people(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TWILIO_AUTH_TOKEN_SECONDARY", "PUBLIC_URL", "VOICE_STREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    machines = {number: "machine_end_beep" for number, _, does in ROWS if does == "machine"}
    keys = {number: does for number, _, does in ROWS if does.isdigit()}
    keys["+15552000006"] = "1"
    script = {"+15552000006": ["busy"]}
    port = free_port()
    twilio = TwilioCalls(duration_s=0.05, script=script, answered_by=machines, converse=True, keys=keys)
    with twilio:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            VOICEFSM_PORT=port,
            VOICEFSM_PUBLIC_URL=f"http://127.0.0.1:{port}",
            # What Twilio is told (and signs); a TLS proxy passes it on as ws:// (so does the stand-in).
            VOICE_STREAM_URL=f"wss://127.0.0.1:{port}/twilio/stream",
            VOICEFSM_DB_URL=postgres_url,
            VOICEFSM_RECORDINGS_DIR="",
            VOICEFSM_FAKE_RESOURCES="1",
            VOICEFSM_API_TOKENS=API_TOKEN,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_PHONE_NUMBER="+15550009999",
            TWILIO_API_BASE=twilio.base_url,
        )
        chosen = plan(settings, load_flow(FLOW), stt="scripted", tts="scripted")
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with (
            serving(settings, chosen) as (_, server),
            httpx.AsyncClient(base_url=server.http_url, headers=headers) as http,
        ):
            csv = "number,name,day,time\n" + "".join(
                f"{number},{name},2024-06-05,09:30\n" for number, name, _ in ROWS
            )
            options = {
                "rate": 10.0,
                "max_concurrent": 3,
                "retry_backoff_s": 0.1,
                "window_start": "00:00",
                "window_end": "00:00",
            }
            answer = await http.post(
                "/api/campaigns", json={"flow": "Reminder", "csv": csv, "options": options}
            )
            assert answer.status_code == 201, answer.text
            campaign = answer.json()["id"]

            def every_call_ended() -> bool:
                with twilio.all_ended:
                    return twilio.all_ended.wait_for(lambda: len(twilio.ended) >= len(ROWS) + 1, 180)

            assert await asyncio.to_thread(every_call_ended), (len(twilio.ended), twilio.callback_errors)
            progress = (await http.get(f"/api/campaigns/{campaign}")).json()
    assert not twilio.callback_errors
    assert progress["state"] == "finished"
    assert progress["outcomes"] == {"answered": 4, "machine": 2}
    engine = create_async_engine(database_url(postgres_url))
    try:
        async with engine.connect() as db:
            rows = await db.execute(
                text(
                    "SELECT a.call_sid, c.number, calls.outcome FROM voicefsm_campaign_attempts a "
                    "JOIN voicefsm_campaign_contacts c ON c.id = a.contact_id "
                    "JOIN calls ON calls.call_sid = a.call_sid"
                )
            )
            outcomes = {row.number: row.outcome for row in rows}
            greetings = [
                row.text
                for row in await db.execute(
                    text("SELECT text FROM turns WHERE speaker = 'agent' AND text LIKE 'Hello%'")
                )
            ]
    finally:
        await engine.dispose()
    assert outcomes == {
        "+15552000001": "confirmed",
        "+15552000002": "voicemail",
        "+15552000003": "confirmed",
        "+15552000004": "voicemail",
        "+15552000005": "cancelled",
        "+15552000006": "confirmed",
    }
    assert Counter(outcomes.values()) == {"confirmed": 3, "voicemail": 2, "cancelled": 1}
    # Each call greeted its own row's name with its appointment; the machines' messages named them too.
    names = {name for _, name, _ in ROWS}
    assert {
        g.split(",")[0].removeprefix("Hello ") for g in greetings if g.startswith("Hello ") and "," in g
    } >= names
    assert any(
        "reminder for Grace about your appointment on Wednesday 5 June at 09:30" in g for g in greetings
    )
