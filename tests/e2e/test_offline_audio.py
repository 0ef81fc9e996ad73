"""A booking by voice with no account and no browser: espeak-ng speaks, pocketsphinx listens.

The server runs as ``voicefsm serve`` would with no credentials (local speech both ways). A
fake Twilio client places the call with the webhook and the media stream; when the agent has
asked a question, the caller's answer is synthesized by espeak-ng, encoded to 8 kHz mu-law and
streamed as Media Streams frames, so it travels the whole phone path: WebSocket, the call's
inbound queue, webrtcvad endpointing and a grammar-constrained decode in a worker process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import httpx
import numpy as np
import websockets

from voicefsm.core.audio import ulaw_encode
from voicefsm.flow.loader import load_flow
from voicefsm.providers.local_tts import synthesize_ulaw
from voicefsm.server.launch import plan, serving
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient

FLOWS = Path(__file__).resolve().parents[2] / "flows"
CALL_SID = "CA" + "7" * 32
ANSWERS = {"ask_day": "friday", "ask_time": "ten thirty", "ask_name": "my name is alex", "confirm": "yes"}


def line_noise(seconds: float) -> bytes:
    """A quiet phone line (about -60 dBFS), as mu-law: what a caller's leg carries between words."""
    samples = np.random.default_rng(1).normal(0, 30, int(seconds * 8000)).astype(np.int16)
    return ulaw_encode(samples.tobytes())


async def test_a_booking_by_voice_through_the_phone_path(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        VOICEFSM_RECORDINGS_DIR=str(tmp_path / "recordings"),
    )
    chosen = plan(settings, load_flow(FLOWS / "booking.py"))
    assert (chosen.stt_name, chosen.tts_name) == ("local", "local")
    answered: list[str] = []
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        webhook = await http.post("/twilio/voice", data={"CallSid": CALL_SID, "From": "+15550001234"})
        token = webhook.text.split('name="token" value="')[1].split('"')[0]
        async with (
            TwilioStreamClient(
                f"{server.ws_url}/twilio/stream",
                call_sid=CALL_SID,
                custom_parameters={"token": token},
                playback="instant",
            ) as twilio,
            websockets.connect(f"{server.ws_url}/api/calls/{CALL_SID}/events") as events,
        ):
            state = None
            async with asyncio.timeout(90):
                async for raw in events:
                    message = json.loads(raw)
                    if message["type"] in ("snapshot", "state"):
                        state = message["state"]
                    elif message["type"] == "ended":
                        break
                    elif message["type"] == "turn" and message["speaker"] == "agent" and state in ANSWERS:
                        # The question has played: the caller thinks, answers, and falls quiet.
                        answered.append(ANSWERS[state])
                        speech = line_noise(0.4) + synthesize_ulaw(ANSWERS[state]) + line_noise(1.2)
                        await twilio.stream_audio(speech, realtime=False)
            await twilio.wait_closed(timeout_s=10)
        async with asyncio.timeout(10):
            await app.state.voicefsm.registry.idle.wait()
            await app.state.voicefsm.writer.flush()
        record = (await http.get(f"/api/calls/{CALL_SID}")).json()
    caller_said = [turn["text"] for turn in record["transcript"] if turn["speaker"] == "caller"]
    assert record["final_state"] == "booked", (record["path"], caller_said)
    assert dt.date.fromisoformat(record["slots"]["day"]).weekday() == 4  # a Friday
    assert record["slots"]["time"].startswith("10:30")
    assert record["slots"]["name"]
    assert len(caller_said) >= len(ANSWERS)  # one utterance per answer at least (more if re-asked)
    assert answered == list(ANSWERS.values())
