"""Fault matrix (reliability.md §4), ops' row: 48, the records database goes away in the middle of a call.

A real PostgreSQL server (a throwaway cluster of this test's own, tests/pgcluster.py) is stopped while
a served call is in progress: the caller goes on hearing the flow, the call ends normally, its records
wait in the on-disk spool, and once the server is started again every one of them is in the database,
in order, and ``/metrics`` says so (spooled, replayed, none lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pgcluster import SERVER_OPTIONS, START_TIMEOUT_S, Cluster, PostgresUnavailable, _run, start_cluster
from pydantic import BaseModel

from voicefsm.flow import Ask, Hangup, Say, VoiceFlow
from voicefsm.providers.base import SpeechToText
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.records import CallStore, RecordWriter
from voicefsm.runtime.driver import CallLimits
from voicefsm.server.app import create_app
from voicefsm.server.flow_service import FlowService
from voicefsm.server.serving import RunningServer, running_server
from voicefsm.settings import Settings
from voicefsm.telephony.recording import RecordingActions
from voicefsm.telephony.twilio.client import TwilioStreamClient

GREETING = "Welcome, this line keeps its records."
QUESTION = "What is your name?"
GOODBYE = "Thank you, goodbye."
CALLER = "+15557654321"


class Caller(BaseModel):
    name: str | None = None


class RecordsLine(VoiceFlow):
    slots_model = Caller

    greet = Say(GREETING, initial=True, barge_in=False)
    ask_name = Ask(QUESTION, slot="name", no_input_s=30.0, retries=0)
    goodbye = Hangup(GOODBYE)
    give_up = Hangup("Goodbye.", outcome="no_input")

    spoken = greet.to(ask_name)
    filled = ask_name.to(goodbye)
    no_input = ask_name.to(give_up)
    no_match = ask_name.to(give_up)


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A cluster this test may stop and start (the session's shared one must stay up for the others)."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL for the test: {exc}")
    try:
        cluster.create_database("records")
        yield cluster
    finally:
        cluster.stop()


def stop_server(cluster: Cluster) -> None:
    """Stop PostgreSQL (fast shutdown: open connections are cut), keeping its data."""
    _run(cluster, [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data), "-m", "fast", "-w", "stop"])


def start_server(cluster: Cluster) -> None:
    """Start PostgreSQL again on the same data and port."""
    _run(
        cluster,
        [
            str(cluster.bindir / "pg_ctl"),
            "-D",
            str(cluster.data),
            "-l",
            str(cluster.log),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            f"-p {cluster.port} {SERVER_OPTIONS}",
            "start",
        ],
    )


@contextlib.asynccontextmanager
async def served(
    url: str, spool: Path, recognizers: list[SpeechToText], recognizer_made: asyncio.Event
) -> AsyncIterator[tuple[RunningServer, RecordWriter, CallStore]]:
    store = await CallStore.open(url)

    def make_stt() -> SpeechToText:
        stt = ScriptedSpeechToText()
        recognizers.append(stt)
        recognizer_made.set()
        return stt

    try:
        writer = RecordWriter(
            store, spool_dir=spool, retries=1, retry_delay_s=0.01, probe_delay_s=0.05, probe_max_s=0.2
        )
        async with writer:
            service = FlowService(
                RecordsLine,
                tts_factory=lambda: ScriptedTextToSpeech(ms_per_character=20),
                stt_factory=make_stt,
                actions=RecordingActions(),
                recordings_dir=None,
                limits=CallLimits(idle_timeout_s=10.0, handler_grace_s=3.0),
                writer=writer,
            )
            service.metrics.watch_records(writer)
            app = create_app(
                Settings(_env_file=None),  # type: ignore[call-arg]
                service.services(),
                store=store,
                writer=writer,
                flow_description=service.description(),
                feeds=service.feeds,
                metrics=service.metrics,
            )
            async with running_server(app) as server:
                yield server, writer, store
    finally:
        await store.aclose()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_fault_48_records_database_down_mid_call(own_postgres: Cluster, tmp_path: Path) -> None:
    recognizers: list[SpeechToText] = []
    recognizer_made = asyncio.Event()
    spool = tmp_path / "spool"
    url = own_postgres.url("records")
    async with served(url, spool, recognizers, recognizer_made) as (server, writer, store):
        twilio = TwilioStreamClient(f"{server.ws_url}/twilio/stream", custom_parameters={"caller": CALLER})
        await twilio.open()
        try:
            # The greeting is heard and the call's first records are in the database...
            await twilio.wait_until(
                lambda: any(m.startswith("ask_name") for m in twilio.played_marks), timeout_s=20
            )
            async with asyncio.timeout(10):
                await writer.flush()
            assert writer.spooled == 0
            # ...then the database goes away, in the middle of the call.
            await asyncio.to_thread(stop_server, own_postgres)
            async with asyncio.timeout(10):
                await recognizer_made.wait()
            stt = recognizers[0]
            assert isinstance(stt, ScriptedSpeechToText)
            stt.say("Ada Lovelace", partials=False)
            # The call goes on: the caller hears the goodbye, and the server hangs up.
            await twilio.wait_until(
                lambda: any(m.startswith("goodbye") for m in twilio.played_marks), timeout_s=20
            )
            await twilio.wait_closed(timeout_s=10)
        finally:
            await twilio.close()
        async with asyncio.timeout(20):
            await writer.flush()  # the call's last records left memory: for the spool
        assert writer.spooled > 0, "the records written while the database was down were not spooled"
        assert writer.spool_depth > 0
        assert writer.lost == 0

        await asyncio.to_thread(start_server, own_postgres)
        async with asyncio.timeout(30):
            await writer.settle()

        assert (writer.lost, writer.spool_depth) == (0, 0)
        assert writer.replayed == writer.spooled
        record = await store.get_call(twilio.call_sid)
        assert record is not None
        assert [(t.speaker, t.text) for t in record.transcript] == [
            ("agent", GREETING),
            ("agent", QUESTION),
            ("caller", "Ada Lovelace"),
            ("agent", GOODBYE),
        ]
        assert [step.target for step in record.path][-2:] == ["ask_name", "goodbye"]
        assert record.slots == {"name": "Ada Lovelace"}
        assert record.outcome and record.ended_at is not None
        assert record.final_state == "goodbye"

        async with httpx.AsyncClient(base_url=server.http_url) as client:
            scraped = (await client.get("/metrics")).text
        assert metric(scraped, "voicefsm_records_spooled_total") == writer.spooled
        assert metric(scraped, "voicefsm_records_replayed_total") == writer.spooled
        assert metric(scraped, "voicefsm_records_lost_total") == 0
        assert metric(scraped, "voicefsm_records_spool_depth") == 0
        assert metric(scraped, "voicefsm_records_queue_depth") == 0
