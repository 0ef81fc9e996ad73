"""A blackholed TTS cannot hold `serve`'s start-up: the warm-up has deadlines, and says what it left."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fakes.elevenlabs_fake import API_KEY, FakeElevenLabs, serve_fake

from voicefsm.flow.loader import load_flow
from voicefsm.flow.prompts import fixed_texts
from voicefsm.providers.registry import create_tts
from voicefsm.server.launch import plan, serving
from voicefsm.server.prompt_warmup import prompt_caching
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient

FLOWS = Path(__file__).resolve().parents[2] / "flows"
BLACKHOLE_S = 120.0  # the fake's first byte comes after this long: for the test, never


@pytest.fixture
async def blackholed() -> AsyncIterator[FakeElevenLabs]:
    fake = FakeElevenLabs()
    fake.tts_first_byte_delay_s = BLACKHOLE_S
    async with serve_fake(fake) as served:
        yield served


def settings_for(tmp_path: Path, elevenlabs: FakeElevenLabs, **extra: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_DB_URL=f"sqlite:///{tmp_path / 'calls.db'}",
        VOICEFSM_RECORDINGS_DIR="",
        VOICEFSM_PROMPT_CACHE_DIR=str(tmp_path / "cache"),
        ELEVENLABS_API_KEY=API_KEY,
        ELEVENLABS_BASE_URL=elevenlabs.base_url,
        **extra,
    )


async def test_each_prompt_fails_at_the_tts_deadline_instead_of_waiting_for_ever(
    tmp_path: Path, blackholed: FakeElevenLabs
) -> None:
    settings = settings_for(
        tmp_path, blackholed, VOICEFSM_TTS_DEADLINE_S=0.2, VOICEFSM_PROMPT_WARM_DEADLINE_S=60
    )
    flow = load_flow(FLOWS / "booking.py")
    started = time.monotonic()
    async with prompt_caching(settings, flow, "elevenlabs") as prompts:
        results = await prompts.warm(lambda: create_tts("elevenlabs", settings))
    took = time.monotonic() - started

    assert len(results) == len(set(fixed_texts(flow)))
    assert all(result.source is None for result in results)
    assert all(
        "no audio within 0.2 s (VOICEFSM_TTS_DEADLINE_S)" in (result.error or "") for result in results
    )
    assert took < 30  # 11 prompts, 2 at a time, 0.2 s each: seconds, not the provider's silence


async def test_a_blackholed_tts_holds_the_start_up_only_until_the_warm_up_deadline(
    tmp_path: Path, blackholed: FakeElevenLabs, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        tmp_path, blackholed, VOICEFSM_TTS_DEADLINE_S=30, VOICEFSM_PROMPT_WARM_DEADLINE_S=0.5
    )
    chosen = plan(settings, load_flow(FLOWS / "booking.py"))
    prompts = len(set(fixed_texts(chosen.flow)))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="voicefsm.server.prompt_warmup"):
        async with (
            serving(settings, chosen) as (_app, server),
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            assert time.monotonic() - started < 20  # the warm-up gave up at 0.5 s; the rest is start-up
            metrics = (await http.get("/metrics")).text
            assert f"voicefsm_prompt_warm_failures_total {float(prompts)}" in metrics

            # The provider is back: the prompts the warm-up left are made when a call needs them.
            blackholed.tts_first_byte_delay_s = 0.0
            call_sid = "CA" + "0" * 31 + "1"
            webhook = await http.post("/twilio/voice", data={"CallSid": call_sid, "From": "+15550001234"})
            token = webhook.text.split('name="token" value="')[1].split('"')[0]
            async with TwilioStreamClient(
                f"{server.ws_url}/twilio/stream", call_sid=call_sid, custom_parameters={"token": token}
            ) as twilio:
                await twilio.wait_for("media", timeout_s=20)
                await twilio.stop()
                await twilio.wait_closed(timeout_s=20)
    (warning,) = [r for r in caplog.records if "deadline" in r.getMessage()]
    assert f"{prompts} of {prompts} prompts not warmed" in warning.getMessage()
    assert "VOICEFSM_PROMPT_WARM_DEADLINE_S" in warning.getMessage()
