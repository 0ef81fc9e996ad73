"""The call page shows each caller turn's wait for its answer as a small timeline (headless Chromium).

A booking call is served in-process on the ElevenLabs SDKs against the loopback fake (0.4 s to the
first byte of a synthesis); once it has ended, Chromium opens its page in the call history.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.browser import chromium_missing_reason, launch_chromium
from e2e.test_served_prompt_cache import FIRST_BYTE_S, FLOWS, answered_call, settings_for
from fakes.elevenlabs_fake import FakeElevenLabs, serve_fake

from voicefsm.flow.loader import load_flow
from voicefsm.server.launch import plan, serving

_MISSING = chromium_missing_reason()
if _MISSING is not None and os.environ.get("VOICEFSM_REQUIRE_BROWSER"):  # set by scripts/test.sh (CI)
    raise RuntimeError(f"the browser tests must run here, but {_MISSING}")
pytestmark = [pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""), pytest.mark.timeout(90)]

CALL_SID = "CA" + "8" * 32


@pytest.fixture
async def elevenlabs() -> AsyncIterator[FakeElevenLabs]:
    fake = FakeElevenLabs()
    fake.tts_first_byte_delay_s = FIRST_BYTE_S
    async with serve_fake(fake) as served:
        yield served


def timelines_on_the_page(url: str) -> dict[str, Any]:
    """Open the call's page as a user would and read its transcript's timelines (blocking)."""
    with launch_chromium(allow_microphone=False) as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_function("() => !document.getElementById('detail-body').hidden", timeout=15_000)
        seen: dict[str, Any] = page.evaluate(
            """() => [...document.querySelectorAll('#detail-transcript li.turn')].map((li) => {
                const figure = li.querySelector('figure.latency');
                return {
                    speaker: li.classList.contains('turn-caller') ? 'caller' : 'agent',
                    text: li.querySelector('.turn-text').textContent,
                    total: figure ? figure.dataset.totalMs : null,
                    caption: figure ? figure.querySelector('figcaption').textContent : null,
                    segments: figure ? [...figure.querySelectorAll('.latency-seg')].map((s) => ({
                        stage: s.className.replace('latency-seg latency-', ''),
                        width: s.getBoundingClientRect().width,
                    })) : [],
                };
            })"""
        )
        return {"turns": seen, "errors": errors}


async def test_a_finished_call_s_page_shows_each_caller_turn_s_wait_as_a_timeline(
    tmp_path: Path, elevenlabs: FakeElevenLabs
) -> None:
    settings = settings_for(tmp_path, elevenlabs)
    chosen = plan(settings, load_flow(FLOWS / "booking.py"))
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await answered_call(server, http, elevenlabs, CALL_SID, ("Tuesday", "10 am"))
        state = app.state.voicefsm
        async with asyncio.timeout(10):
            await state.registry.idle.wait()
            await state.writer.flush()
        record = (await http.get(f"/api/calls/{CALL_SID}")).json()
        page = await asyncio.to_thread(timelines_on_the_page, f"{server.http_url}/calls#{CALL_SID}")
    assert page["errors"] == []
    turns = page["turns"]
    assert [turn["text"] for turn in turns] == [turn["text"] for turn in record["transcript"]]
    callers = [turn for turn in turns if turn["speaker"] == "caller"]
    assert [turn["text"] for turn in callers] == ["Tuesday", "10 am"]
    assert all(turn["caption"] is None for turn in turns if turn["speaker"] == "agent")
    recorded = [turn["breakdown"] for turn in record["transcript"] if turn["speaker"] == "caller"]
    for shown, breakdown in zip(callers, recorded, strict=True):
        assert shown["total"] == str(breakdown["total_ms"])
        assert f"answered in {breakdown['total_ms']} ms" in shown["caption"]
        assert f"→ first audio sent {breakdown['first_audio_ms']} ms" in shown["caption"]
        assert [segment["stage"] for segment in shown["segments"]] == [
            "commit",
            "parse",
            "transition",
            "first-audio",
        ]
    day, time_ = callers
    # The reply to "Tuesday" waited for the speech service (made ahead); to "10 am", the cache answered.
    assert "speech service" in day["caption"] and "synthesized ahead" in day["caption"]
    assert "prompt cache (memory)" in time_["caption"]
    widths = {segment["stage"]: segment["width"] for segment in day["segments"]}
    assert widths["first-audio"] > widths["parse"]  # to scale: the service's wait is the long part
