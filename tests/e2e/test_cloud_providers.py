"""A call through the server runs end to end on the cloud providers' real SDKs, pointed at loopback fakes.

The server is configured the way an operator would (environment settings: ElevenLabs key and
base URL, Twilio credentials and API base, a public URL), so it is in production mode:
signatures are checked, and the SMS of the survey goes out through Twilio's REST API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fakes.elevenlabs_fake import API_KEY, FakeElevenLabs, serve_fake
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN, TwilioRestFake

from voicefsm.flow.loader import load_flow
from voicefsm.server.launch import plan, serving
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.signature import compute_signature

FLOWS = Path(__file__).resolve().parents[2] / "flows"
PUBLIC_URL = "https://voice.example.test"
CALLER = "+15550001234"
SILENCE = b"\xff" * 160


@pytest.fixture
async def elevenlabs() -> AsyncIterator[FakeElevenLabs]:
    async with serve_fake(FakeElevenLabs()) as fake:
        yield fake


@pytest.fixture
def twilio_rest() -> AsyncIterator[TwilioRestFake]:
    with TwilioRestFake() as fake:
        yield fake  # type: ignore[misc]


async def caller_pauses(fake: FakeElevenLabs, *, seconds: float) -> None:
    """Let ``seconds`` of line audio reach the recognizer: a caller thinks before answering.

    (Answers within ~0.4 s of the agent's last word are dropped as echo, as on a real line.)
    """
    session = fake.stt_sessions[-1]
    target = len(session.audio) + int(seconds * 8000)
    await fake.wait_for(lambda: len(session.audio) >= target, within_s=10)


def production_settings(tmp_path: Path, elevenlabs: FakeElevenLabs, twilio_rest: TwilioRestFake) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_PUBLIC_URL=PUBLIC_URL,
        VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        VOICEFSM_RECORDINGS_DIR=str(tmp_path / "recordings"),
        ELEVENLABS_API_KEY=API_KEY,
        ELEVENLABS_BASE_URL=elevenlabs.base_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_PHONE_NUMBER="+15550009999",
        TWILIO_API_BASE=twilio_rest.base_url,
    )


async def test_a_survey_call_runs_on_elevenlabs_and_texts_through_twilio(
    tmp_path: Path, elevenlabs: FakeElevenLabs, twilio_rest: TwilioRestFake
) -> None:
    settings = production_settings(tmp_path, elevenlabs, twilio_rest)
    chosen = plan(settings, load_flow(FLOWS / "survey.py"))
    assert (chosen.stt_name, chosen.tts_name, chosen.telephony) == ("elevenlabs", "elevenlabs", "twilio")
    call_sid = "CA" + "5" * 32
    form = {"CallSid": call_sid, "From": CALLER, "To": "+15550009999"}
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        signature = compute_signature(AUTH_TOKEN, f"{PUBLIC_URL}/twilio/voice", form)
        webhook = await http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
        assert webhook.status_code == 200
        token = webhook.text.split('name="token" value="')[1].split('"')[0]
        stream_url = f"wss://{PUBLIC_URL.removeprefix('https://')}/twilio/stream"
        headers = {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, stream_url, {})}
        async with TwilioStreamClient(
            f"{server.ws_url}/twilio/stream",
            call_sid=call_sid,
            headers=headers,
            custom_parameters={"token": token},
            playback="realtime",
        ) as twilio:
            line = asyncio.create_task(twilio.stream_audio(SILENCE * 50 * 60))  # a minute of open line
            try:
                answers = ((2, "four"), (3, "yes"), (4, "the parking was hard to find"))
                for prompts_played, answer in answers:
                    await twilio.wait_until(
                        lambda n=prompts_played: len(twilio.played_marks) >= n, timeout_s=30
                    )
                    await caller_pauses(elevenlabs, seconds=0.6)
                    elevenlabs.say(answer)
                await twilio.wait_closed(timeout_s=30)
            finally:
                line.cancel()
                await asyncio.gather(line, return_exceptions=True)
        state = app.state.voicefsm
        async with asyncio.timeout(10):  # the call's end is recorded just after its line closes
            await state.registry.idle.wait()
            await state.writer.flush()
        record = (await http.get(f"/api/calls/{call_sid}")).json()
    assert record["slots"]["rating"] == 4
    assert record["slots"]["recommend"] is True
    assert record["slots"]["comment"] == "the parking was hard to find"
    assert record["final_state"] == "thanks"
    assert elevenlabs.tts_requests[0].body["text"].startswith("Thanks for taking")
    sms = [request for request in twilio_rest.requests if request.path.endswith("/Messages.json")]
    assert len(sms) == 1
    assert sms[0].value("To") == CALLER
    assert "rating 4 of 5" in (sms[0].value("Body") or "")
    assert elevenlabs.stt_sessions and elevenlabs.stt_sessions[0].param("model_id") == "scribe_v2_realtime"
