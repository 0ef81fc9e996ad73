"""A call through the server runs end to end on Azure Speech's real SDK and Twilio's REST API.

Both are faked on loopback.

The server is configured the way an operator would (AZURE_SPEECH_KEY and AZURE_SPEECH_HOST, Twilio
credentials and API base, a public URL), so it is in production mode: signatures are checked, and
the transfer of flows/ivr_menu.py goes out as a call update through Twilio's REST API.
Once in process (``voicefsm.server.launch``), once as ``voicefsm serve`` in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.azure_fake import API_KEY, FakeAzureSpeech, serve_azure_fake
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN, RecordedRequest, TwilioRestFake

from voicefsm.flow.loader import load_flow
from voicefsm.records import CallStore
from voicefsm.server.launch import plan, serving
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.signature import compute_signature

FLOWS = Path(__file__).resolve().parents[2] / "flows"
IVR = FLOWS / "ivr_menu.py"
BILLING = "+15550100001"  # flows/ivr_menu.py's billing line
PUBLIC_URL = "https://voice.example.test"
OUR_NUMBER = "+15550009999"
CALLER = "+15550001234"
SILENCE = b"\xff" * 160
CALL_TIMEOUT_S = 20
STARTUP_TIMEOUT_S = 20
PROMPTS = (
    "Thanks for calling Acme.",
    "For billing, say billing or press 1.",
    "Connecting you to billing.",
)
READY = re.compile(r"voicefsm serving FrontDesk from .* on (http://127\.0\.0\.1:(\d+))")


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureSpeech]:
    async with serve_azure_fake() as fake:
        yield fake


@pytest.fixture
def twilio_rest() -> Iterator[TwilioRestFake]:
    with TwilioRestFake() as fake:
        yield fake


OPERATOR_TOKEN = "operator-api-token-for-tests"


def operator_environment(
    tmp_path: Path, azure: FakeAzureSpeech, twilio_rest: TwilioRestFake
) -> dict[str, str]:
    """What an operator puts in the environment to serve on Azure and Twilio, here pointed at the fakes."""
    return {
        "VOICEFSM_PUBLIC_URL": PUBLIC_URL,
        "VOICEFSM_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        "VOICEFSM_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "AZURE_SPEECH_KEY": API_KEY,
        "AZURE_SPEECH_HOST": azure.host,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": OUR_NUMBER,
        "TWILIO_API_BASE": twilio_rest.base_url,
        "VOICEFSM_API_TOKENS": OPERATOR_TOKEN,  # the API is closed without one (docs/security.md)
        # The call's own prompts are what is checked on the Azure fake: no warm-up, a private cache.
        "VOICEFSM_PROMPT_WARM": "false",
        "VOICEFSM_PROMPT_CACHE_DIR": str(tmp_path / "prompt-cache"),
    }


async def caller_pauses(azure: FakeAzureSpeech, *, seconds: float) -> None:
    """Let ``seconds`` of line audio reach the recognizer: a caller thinks before answering.

    (Answers within 0.4 s of the agent's last word are dropped as echo, as on a real line.)
    """
    session = azure.stt_sessions[-1]
    target = session.audio_bytes + int(seconds * 8000)
    await azure.wait_for(lambda: session.audio_bytes >= target, within_s=10)


async def call_billing(
    http_url: str, ws_url: str, azure: FakeAzureSpeech, call_sid: str
) -> TwilioStreamClient:
    """Call the front desk as Twilio would (signed webhook, signed stream) and say "billing" to its menu.

    Returns the phone once the server has closed the media stream.
    """
    form = {"CallSid": call_sid, "From": CALLER, "To": OUR_NUMBER}
    async with httpx.AsyncClient(base_url=http_url) as http:
        signature = compute_signature(AUTH_TOKEN, f"{PUBLIC_URL}/twilio/voice", form)
        webhook = await http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
    assert webhook.status_code == 200, webhook.text
    token = webhook.text.split('name="token" value="')[1].split('"')[0]
    stream_url = f"wss://{PUBLIC_URL.removeprefix('https://')}/twilio/stream"
    headers = {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, stream_url, {})}
    async with TwilioStreamClient(
        f"{ws_url}/twilio/stream",
        call_sid=call_sid,
        headers=headers,
        custom_parameters={"token": token},
        playback="realtime",
    ) as twilio:
        line = asyncio.create_task(twilio.stream_audio(SILENCE * 50 * 60), name="phone-line")
        try:
            await twilio.wait_until(
                lambda: any(mark.startswith("menu#") for mark in twilio.played_marks),
                timeout_s=CALL_TIMEOUT_S,
            )
            await caller_pauses(azure, seconds=0.8)
            azure.say("Billing.")
            await twilio.wait_closed(timeout_s=CALL_TIMEOUT_S)
        finally:
            line.cancel()
            await asyncio.gather(line, return_exceptions=True)
    return twilio


def assert_transferred_to_billing(call_sid: str, twilio_rest: TwilioRestFake) -> None:
    """Twilio's REST API got one request: the call update whose TwiML dials billing (and no hang-up)."""
    (update,) = twilio_rest.requests
    assert isinstance(update, RecordedRequest)
    assert (update.method, update.path) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json",
    )
    assert update.authorized
    assert update.value("Status") is None
    number = ET.fromstring(update.value("Twiml") or "<Response/>").find("./Dial/Number")
    assert number is not None and number.text == BILLING
    # The transferred leg reports its progress to the server's status callback (issue 16).
    assert number.attrib["statusCallback"] == f"{PUBLIC_URL}/twilio/status"


def assert_spoken_on_azure(azure: FakeAzureSpeech, twilio: TwilioStreamClient) -> None:
    """The three prompts were synthesized by Azure as 8 kHz mu-law; exactly that audio reached the phone."""
    assert len(azure.tts_requests) == len(PROMPTS)
    for request, prompt in zip(azure.tts_requests, PROMPTS, strict=True):
        assert prompt in request.ssml
        assert "<voice name='en-US-JennyNeural'>" in request.ssml
        assert request.context["synthesis"]["audio"]["outputFormat"] == "raw-8khz-8bit-mono-mulaw"
        assert request.finished
    assert bytes(twilio.agent_audio) == azure.tts_audio * len(PROMPTS)
    (session,) = azure.stt_sessions  # one recognizer for the whole call
    assert session.query == "language=en-US"
    assert int.from_bytes(session.riff_header[20:22], "little") == 7  # mu-law, passed through untranscoded
    assert session.closed.is_set()


def assert_record(record: dict[str, Any]) -> None:
    assert record["outcome"] == "transferred"
    assert record["final_state"] == "billing"
    assert [step["target"] for step in record["path"]] == ["greet", "menu", "billing"]
    caller_turns = [
        (turn["text"], turn["via"]) for turn in record["transcript"] if turn["speaker"] == "caller"
    ]
    assert caller_turns == [("Billing.", "speech")]
    assert record["errors"] == []


async def test_a_menu_call_runs_on_azure_and_is_transferred_through_twilio(
    tmp_path: Path, azure: FakeAzureSpeech, twilio_rest: TwilioRestFake
) -> None:
    settings = Settings(_env_file=None, VOICEFSM_PORT=0, **operator_environment(tmp_path, azure, twilio_rest))
    chosen = plan(settings, load_flow(IVR))
    assert (chosen.stt_name, chosen.tts_name, chosen.telephony) == ("azure", "azure", "twilio")
    call_sid = "CA" + "a" * 32
    async with serving(settings, chosen) as (app, server):
        twilio = await call_billing(server.http_url, server.ws_url, azure, call_sid)
        state = app.state.voicefsm
        async with asyncio.timeout(10):  # the call's end is recorded just after its line closes
            await state.registry.idle.wait()
            await state.writer.flush()
        bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.http_url, headers=bearer) as http:
            record = (await http.get(f"/api/calls/{call_sid}")).json()
    assert_record(record)
    assert_transferred_to_billing(call_sid, twilio_rest)
    assert_spoken_on_azure(azure, twilio)


# -- voicefsm serve, as a subprocess --------------------------------------------------------------


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any credentials or voicefsm settings, plus ``settings``."""
    prefixes = (
        "TWILIO_",
        "ELEVENLABS_",
        "AZURE_",
        "VOICEFSM_",
        "VOICE_",
        "PUBLIC_URL",
        "DATABASE_URL",
        "STT_PROVIDER",
        "TTS_PROVIDER",
    )
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **settings}


@contextlib.asynccontextmanager
async def voicefsm_serve(
    cwd: Path, environment: dict[str, str], *args: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, list[str]]]:
    """``voicefsm serve ARGS --port 0``: yields the process, its URL and the banner it printed when ready."""
    stderr_path = cwd / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicefsm", "serve", *args, "--port", "0",
            cwd=cwd, env=clean_environment(**environment), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            banner: list[str] = []
            # Everything up to the telephony line is printed at once, after the server listens.
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while not any(line.lstrip().startswith("telephony") for line in banner):
                    line = await process.stdout.readline()
                    if not line:
                        raise AssertionError(f"serve exited before listening:\n{stderr_path.read_text()}")
                    banner.append(line.decode("utf-8", errors="replace").rstrip("\n"))
            ready = next(match for line in banner if (match := READY.search(line)))
            yield process, ready.group(1), banner
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_voicefsm_serve_says_it_uses_azure_and_twilio_and_takes_a_call_on_them(
    tmp_path: Path, azure: FakeAzureSpeech, twilio_rest: TwilioRestFake
) -> None:
    environment = operator_environment(tmp_path, azure, twilio_rest)
    call_sid = "CA" + "b" * 32
    async with voicefsm_serve(tmp_path, environment, str(IVR)) as (process, url, banner):
        text = "\n".join(banner)
        assert "speech         STT azure · TTS azure" in text, text
        assert "telephony      twilio ·" in text, text
        twilio = await call_billing(url, url.replace("http://", "ws://", 1), azure, call_sid)
        process.send_signal(signal.SIGTERM)  # drains (nothing left) and exits with the records written
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    store = await CallStore.open(environment["VOICEFSM_DB_URL"])
    try:
        record = await store.get_call(call_sid)
    finally:
        await store.aclose()
    assert record is not None
    assert_record(record.model_dump(mode="json"))
    assert_transferred_to_billing(call_sid, twilio_rest)
    assert_spoken_on_azure(azure, twilio)
