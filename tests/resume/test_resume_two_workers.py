"""A call lost on one worker resumes on another: two served workers share one real PostgreSQL.

Twilio's side is played as a load balancer would spread it: the call's first webhook and stream
reach worker A; after the stream drops (or A shuts down mid-call), Twilio's redirect and the new
stream reach worker B, which has never seen the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from pizza_line import CRUST_PROMPT, Pizza, heard, idle, marks, ring, stream_parameters

from voicefsm.records import CallStore
from voicefsm.runtime.snapshot import RESUME_APOLOGY
from voicefsm.server.launch import plan, serving
from voicefsm.server.serving import RunningServer
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient

CALL = "CA" + "6" * 32

Worker = tuple[FastAPI, RunningServer, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def worker(name: str, db_url: str) -> AsyncIterator[Worker]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        VOICEFSM_PORT=0,
        VOICEFSM_DB_URL=db_url,
        VOICEFSM_RECORDINGS_DIR="",
        VOICEFSM_WORKER_NAME=name,
    )
    chosen = plan(settings, Pizza, stt="scripted", tts="scripted")
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        yield app, server, http


async def answer_size_then_lose(a: Worker, *, how: str) -> TwilioStreamClient:
    """The call starts on A, the caller answers the first question, and A loses the stream ``how``."""
    app_a, server_a, http_a = a
    parameters = stream_parameters(await ring(http_a, CALL))
    url = f"{server_a.ws_url}/twilio/stream"
    first = TwilioStreamClient(url, call_sid=CALL, custom_parameters=parameters)
    await first.open()
    await heard(first, "ask_size")
    await first.press("2")  # large
    await heard(first, "ask_crust")
    if how == "dropped":
        await first.close()
        await idle(app_a)
    return first


async def resume_on(b: Worker, *, then: Worker, late_end: CallStore | None = None) -> None:
    """Twilio's redirect reaches B, which streams the call again; the caller finishes it there. The
    redirect after its goodbye reaches ``then``, which must hang up (B deleted the snapshot first)."""
    _, server_b, http_b = b
    parameters = stream_parameters(await ring(http_b, CALL))
    assert parameters["resume"] == "1"
    async with TwilioStreamClient(
        f"{server_b.ws_url}/twilio/stream", call_sid=CALL, custom_parameters=parameters
    ) as second:
        await heard(second, "ask_crust")
        assert marks(second)[:2] == ["resumed", "ask_crust"]
        if late_end is not None:  # the lost stream's worker writes its end only now (a slow database)
            assert await late_end.call_ended(CALL, outcome="hung_up")
        await second.press("1")  # thin
        assert await second.wait_closed(timeout_s=10) == 1000
    assert "<Hangup" in await ring(then[2], CALL)
    await idle(b[0])


async def the_one_record(b: Worker) -> None:
    app_b = b[0]
    await app_b.state.voicefsm.writer.flush()
    store: CallStore = app_b.state.voicefsm.store
    record = await store.get_call(CALL)
    assert record is not None
    assert (record.outcome, record.worker) == ("completed", "worker-b")
    assert record.slots == {"size": "large", "crust": "thin"}
    agent = [turn.text for turn in record.transcript if turn.speaker == "agent"]
    assert agent[-3:] == [RESUME_APOLOGY, CRUST_PROMPT, "A large pizza with a thin crust. Goodbye!"]
    assert [turn.seq for turn in record.transcript] == list(range(1, len(record.transcript) + 1))
    assert [step.event for step in record.path].count("resumed") == 1
    assert len(await store.list_calls()) == 1


async def test_a_stream_dropped_on_one_worker_resumes_on_another(postgres_url: str) -> None:
    async with worker("worker-a", postgres_url) as a, worker("worker-b", postgres_url) as b:
        await answer_size_then_lose(a, how="dropped")
        await a[0].state.voicefsm.writer.flush()
        await resume_on(b, then=a, late_end=a[0].state.voicefsm.store)
        await the_one_record(b)


async def test_a_worker_shut_down_mid_call_has_it_resumed_by_another(postgres_url: str) -> None:
    async with worker("worker-b", postgres_url) as b:
        async with worker("worker-a", postgres_url) as a:
            first = await answer_size_then_lose(a, how="shutdown")
        # A has shut down (its calls cut: "server shutdown") and closed the stream.
        assert await first.wait_closed(timeout_s=10)
        await first.close()
        await resume_on(b, then=b)
        await the_one_record(b)
