"""The call API answers for a call whose records still wait in the record writer's batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from voicefsm.records import CallStore, RecordWriter
from voicefsm.server.app import create_app
from voicefsm.settings import Settings

CALL = "CA" + "7" * 32
BASE = "http://testserver"


@pytest.fixture
async def store(records_url: str) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(records_url)
    yield opened
    await opened.aclose()


async def test_a_call_whose_records_are_still_gathering_is_found_not_404(store: CallStore) -> None:
    # A writer that would let a batch gather for a minute: the call's first records are queued, not
    # written, when the API is asked for the call (a call that only just started, or ended).
    async with RecordWriter(store, linger_s=60.0) as writer:
        writer.call_started(CALL, flow="Booking", caller="+15551234567", started_at=dt.datetime.now(dt.UTC))
        writer.state(CALL, "greeting")
        assert writer.pending
        app = create_app(Settings.model_validate({"recordings_dir": None}), store=store, writer=writer)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            response = await http.get(f"/api/calls/{CALL}")
            assert response.status_code == 200, response.text
            assert (response.json()["call_sid"], response.json()["current_state"]) == (CALL, "greeting")
            assert not writer.pending
            unknown = await http.get("/api/calls/CA" + "8" * 32)
            assert unknown.status_code == 404 and "no call CA888" in unknown.text


async def test_a_writer_that_never_started_is_not_waited_for(store: CallStore) -> None:
    # Nothing would write its records: the API says the call is not there rather than fail.
    writer = RecordWriter(store)
    writer.call_started(CALL, flow="Booking", caller=None)
    app = create_app(Settings.model_validate({"recordings_dir": None}), store=store, writer=writer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get(f"/api/calls/{CALL}")).status_code == 404
    await writer.aclose()
