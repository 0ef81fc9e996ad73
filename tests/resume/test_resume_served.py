"""A served call whose media stream is lost resumes where it was, on one worker, over real loopback sockets.

The test plays Twilio: it posts the voice webhook, opens the stream the TwiML names, drops the
socket without ``stop`` mid-question, then follows the ``<Redirect>`` the TwiML continues with
(the voice webhook again) and opens the new stream it answers with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pizza_line import CRUST_PROMPT, SIZE_PROMPT, Pizza, heard, idle, marks, ring, stream_parameters

from voicefsm.records import CallStore
from voicefsm.records.snapshots import SnapshotStore
from voicefsm.runtime.snapshot import RESUME_APOLOGY, FlowSnapshot
from voicefsm.server.launch import plan, serving
from voicefsm.server.serving import RunningServer
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient

CALL = "CA" + "5" * 32


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, RunningServer, httpx.AsyncClient]]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        VOICEFSM_RECORDINGS_DIR="",
    )
    chosen = plan(settings, Pizza, stt="scripted", tts="scripted")
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        yield app, server, http


async def test_a_stream_dropped_mid_question_resumes_with_an_apology_and_the_question_again(
    served: tuple[FastAPI, RunningServer, httpx.AsyncClient],
) -> None:
    app, server, http = served
    twiml = await ring(http, CALL)
    assert f'<Redirect method="POST">{server.http_url}/twilio/voice</Redirect>' in twiml
    parameters = stream_parameters(twiml)
    assert "resume" not in parameters

    first = TwilioStreamClient(f"{server.ws_url}/twilio/stream", call_sid=CALL, custom_parameters=parameters)
    await first.open()
    await heard(first, "ask_size")
    await first.press("2")  # large
    await heard(first, "ask_crust")
    await first.close()  # the socket drops without Twilio's stop, mid-question

    # Twilio follows the <Redirect> at once: the webhook lets the lost stream's session close first.
    twiml = await ring(http, CALL)
    assert CALL not in app.state.voicefsm.registry.active
    parameters = stream_parameters(twiml)
    assert parameters["resume"] == "1"
    async with TwilioStreamClient(
        f"{server.ws_url}/twilio/stream", call_sid=CALL, custom_parameters=parameters
    ) as second:
        await heard(second, "ask_crust")
        assert marks(second)[:2] == ["resumed", "ask_crust"]  # the apology, then the question again
        await second.press("1")  # thin
        assert await second.wait_closed(timeout_s=10) == 1000  # goodbye said, hung up
    await idle(app)

    assert "<Hangup" in await ring(http, CALL)  # Twilio's redirect after the flow ended: nothing to resume

    await app.state.voicefsm.writer.flush()
    store: CallStore = app.state.voicefsm.store
    record = await store.get_call(CALL)
    assert record is not None
    assert (record.outcome, record.final_state) == ("completed", "done")
    assert record.slots == {"size": "large", "crust": "thin"}  # the answer before the drop is kept
    agent = [turn.text for turn in record.transcript if turn.speaker == "agent"]
    assert agent == [
        "Pizza line.",
        SIZE_PROMPT,
        CRUST_PROMPT,
        RESUME_APOLOGY,
        CRUST_PROMPT,
        "A large pizza with a thin crust. Goodbye!",
    ]
    assert [turn.seq for turn in record.transcript] == list(range(1, len(record.transcript) + 1))
    path = [(step.source, step.event, step.target) for step in record.path]
    assert ("ask_crust", "disconnected", "hung_up") in path
    assert path[path.index(("ask_crust", "disconnected", "hung_up")) + 1] == (
        "ask_crust",
        "resumed",
        "ask_crust",
    )
    await app.state.voicefsm.services.snapshots.flush()
    assert await SnapshotStore.of(store).load(CALL) is None  # the ended flow deleted its snapshot
    assert len(await store.list_calls()) == 1


async def test_a_stream_dropped_mid_prompt_with_no_redirect_still_ends_cleanly_and_keeps_its_snapshot(
    served: tuple[FastAPI, RunningServer, httpx.AsyncClient],
) -> None:
    app, server, http = served
    parameters = stream_parameters(await ring(http, CALL))
    twilio = TwilioStreamClient(f"{server.ws_url}/twilio/stream", call_sid=CALL, custom_parameters=parameters)
    await twilio.open()
    await twilio.wait_for("media", timeout_s=10)  # the greeting is on its way: drop mid-TTS
    await twilio.close()
    await idle(app)

    store: CallStore = app.state.voicefsm.store
    writer = app.state.voicefsm.writer
    await writer.flush()
    record = await store.get_call(CALL)
    assert record is not None
    assert record.outcome == "hung_up" and record.ended_at is not None  # fault 16: a clean end
    snapshots = app.state.voicefsm.services.snapshots
    await snapshots.flush()
    snapshot = await snapshots.load(CALL)
    assert isinstance(snapshot, FlowSnapshot)
    assert snapshot.state == "greet"  # a later redirect would say the greeting again
    assert await snapshots.verdict(CALL) == "resume"


async def test_a_stream_asking_to_resume_a_call_without_a_snapshot_hears_why_and_is_hung_up(
    served: tuple[FastAPI, RunningServer, httpx.AsyncClient],
) -> None:
    app, server, http = served
    parameters = {**stream_parameters(await ring(http, CALL)), "resume": "1"}  # e.g. its snapshot purged
    async with TwilioStreamClient(
        f"{server.ws_url}/twilio/stream", call_sid=CALL, custom_parameters=parameters
    ) as twilio:
        assert await twilio.wait_closed(timeout_s=10) == 1000
        assert marks(twilio) == ["cannot_resume"]
    await idle(app)
