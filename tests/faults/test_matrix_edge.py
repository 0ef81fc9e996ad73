"""Fault matrix, edge's rows (research/reliability.md §4): 11, 20, 21, 22, 23, 24, 46.

Each runs the real server: the whole served stack (flow, records database, writer) in this process
over loopback, or ``voicefsm serve`` as a separate process where memory or a signal is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voicefsm.flow import load_flow
from voicefsm.records import CallStore
from voicefsm.server.launch import plan, serving
from voicefsm.server.serving import RunningServer
from voicefsm.server.state import ServerState
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.signature import compute_signature

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "flows" / "echo.py"
AUTH_TOKEN = "fault-matrix-auth-token"
PUBLIC_URL = "https://voice.example.test"
STREAM_URL = "wss://voice.example.test/twilio/stream"
CALLER = "+15550001234"
STARTUP_TIMEOUT_S = 30
READY = re.compile(r"voicefsm serving \w+ from .* on (http://127\.0\.0\.1:(\d+))")
T = TypeVar("T")


def sid(n: int, prefix: str = "CA") -> str:
    return f"{prefix}{n:032x}"


def signed(path: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, f"{PUBLIC_URL}{path}", form)}


def stream_headers() -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, STREAM_URL, {})}


def stream_token(twiml: str) -> str | None:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        return None
    return next(p.attrib["value"] for p in stream.findall("Parameter") if p.attrib["name"] == "token")


# -- the whole stack in this process -------------------------------------------------------------------


@dataclass
class Stack:
    app: FastAPI
    server: RunningServer
    http: httpx.AsyncClient
    db_path: Path

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.voicefsm
        return state

    @property
    def stream_url(self) -> str:
        return f"{self.server.ws_url}/twilio/stream"

    async def post(self, path: str, form: dict[str, str], **headers: str) -> httpx.Response:
        return await self.http.post(path, data=form, headers={**signed(path, form), **headers})

    async def flushed(self) -> None:
        writer = self.state.writer
        assert writer is not None
        await asyncio.wait_for(writer.flush(), 10)

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    def call(self, call_sid: str) -> tuple[Any, ...] | None:
        found = self.rows("SELECT outcome, ended_at FROM calls WHERE call_sid = ?", call_sid)
        return found[0] if found else None

    def stream(self, call_sid: str, token: str | None) -> TwilioStreamClient:
        return TwilioStreamClient(
            self.stream_url,
            call_sid=call_sid,
            headers=stream_headers(),
            custom_parameters={"token": token} if token else {},
        )


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, **env: object) -> AsyncIterator[Stack]:
    """The echo flow served as in production: signed webhooks, records in a SQLite file, local voice."""
    db_path = tmp_path / "calls.db"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        VOICEFSM_PUBLIC_URL=PUBLIC_URL,
        VOICEFSM_DB_URL=f"sqlite:///{db_path}",
        VOICEFSM_RECORDINGS_DIR="",
        VOICEFSM_PROMPT_WARM="false",
        VOICEFSM_PORT=0,
        **env,
    )
    chosen = plan(settings, load_flow(ECHO), tts="local")
    async with (
        serving(settings, chosen) as (app, server),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        yield Stack(app, server, http, db_path)


async def answered(stack: Stack, call_sid: str) -> str:
    """Ring: the voice webhook's TwiML for ``call_sid``; returns its stream token."""
    response = await stack.post("/twilio/voice", {"CallSid": call_sid, "From": CALLER})
    assert response.status_code == 200, response.text
    token = stream_token(response.text)
    assert token is not None, response.text
    return token


# -- 20 -----------------------------------------------------------------------------------------------------


async def test_fault_20_unsigned_or_mislabelled_webhooks_are_refused_and_leave_nothing(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        form = {"CallSid": sid(20), "From": CALLER}
        missing = await s.http.post("/twilio/voice", data=form)
        bad = await s.http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "bm90IGl0"})
        other_host = await s.http.post(
            "/twilio/voice",
            data=form,
            headers={
                "X-Twilio-Signature": compute_signature(AUTH_TOKEN, "https://evil.test/twilio/voice", form)
            },
        )
        as_json = await s.http.post("/twilio/voice", json=form, headers=signed("/twilio/voice", {}))
        status = await s.http.post("/twilio/status", data={"CallSid": sid(20), "CallStatus": "completed"})
        assert [r.status_code for r in (missing, bad, other_host, as_json, status)] == [
            403,
            403,
            403,
            415,
            403,
        ]
        assert all("<Response" not in r.text for r in (missing, bad, other_host, as_json))
        assert "application/x-www-form-urlencoded" in as_json.text
        assert await s.state.registry.outstanding() == 0 and not s.state.registry.active
        await s.flushed()
        assert s.rows("SELECT count(*) FROM calls") == [(0,)]
        metrics = (await s.http.get("/metrics", headers={"authorization": "Bearer x"})).status_code
        assert metrics == 401  # (the API is closed too: no tokens configured)


# -- 21 -----------------------------------------------------------------------------------------------------


async def test_fault_21_a_replayed_webhook_gets_the_same_twiml_one_token_one_record(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        form = {"CallSid": sid(21), "From": CALLER, "CallStatus": "ringing"}
        idem = {"I-Twilio-Idempotency-Token": "idem-21"}
        first, *replays = await asyncio.gather(*(s.post("/twilio/voice", form, **idem) for _ in range(3)))
        assert first.status_code == 200 and stream_token(first.text) is not None
        assert [r.text for r in replays] == [first.text] * 2  # Twilio's retries: the same answer
        # The same CallSid without the header (a retry from elsewhere): a stream answer, one call.
        again = await s.post("/twilio/voice", form)
        other_token = stream_token(again.text)
        assert other_token is not None
        async with s.stream(sid(21), stream_token(first.text)) as twilio:
            await twilio.wait_for("mark", timeout_s=20)
            # Twilio retrying the webhook after the stream started still gets the answer it was given.
            late = await s.post("/twilio/voice", form, **idem)
            assert late.text == first.text
            async with s.stream(sid(21), other_token) as second:
                assert await second.wait_closed() == 1008  # never two streams for one call
            await twilio.stop()
            assert await twilio.wait_closed(timeout_s=10) == 1000
        await asyncio.wait_for(s.state.registry.idle.wait(), 10)
        await s.flushed()
        assert s.rows("SELECT call_sid FROM calls") == [(sid(21),)]
        # Each token opens at most one stream: replaying either after the call opens nothing.
        for token in {stream_token(first.text), other_token}:
            async with s.stream(sid(21), token) as replay:
                assert await replay.wait_closed() == 1008


# -- 22 -----------------------------------------------------------------------------------------------------


async def test_fault_22_shared_key_signatures_are_refused_explicitly(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        form = {"CallSid": sid(22), "From": CALLER}
        settings_header = {"X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC-SHA256"}
        # Even with a valid auth-token signature beside it, a shared-key request is not accepted.
        refused = await s.post("/twilio/voice", form, **settings_header)
        status = await s.post(
            "/twilio/status", {"CallSid": sid(22), "CallStatus": "completed"}, **settings_header
        )
        assert (refused.status_code, status.status_code) == (403, 403)
        assert "X-Twilio-Webhooks-Signature-Settings" in refused.text and "Webhooks Rule" in refused.text
        assert await s.state.registry.outstanding() == 0
        await s.flushed()
        assert s.rows("SELECT count(*) FROM calls") == [(0,)]


# -- 23 -----------------------------------------------------------------------------------------------------


async def test_fault_23_a_locked_database_does_not_delay_the_webhook(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        with contextlib.closing(sqlite3.connect(s.db_path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")  # every write waits (busy_timeout) while this is held
            try:
                started = time.monotonic()
                token = await answered(s, sid(23))
                took = time.monotonic() - started
                assert took < 2.0, f"the webhook took {took:.2f} s with the database locked"
                async with s.stream(sid(23), token) as twilio:
                    await twilio.wait_for("mark", timeout_s=20)  # the call goes on; its records wait
                    started = time.monotonic()
                    ended = await s.post("/twilio/status", {"CallSid": sid(23), "CallStatus": "in-progress"})
                    assert ended.status_code == 204 and time.monotonic() - started < 2.0
                    await twilio.stop()
            finally:
                locker.execute("ROLLBACK")
        await asyncio.wait_for(s.state.registry.idle.wait(), 10)
        await s.flushed()
        [(outcome, ended_at)] = s.rows("SELECT outcome, ended_at FROM calls WHERE call_sid = ?", sid(23))
        assert ended_at is not None and outcome is not None


async def test_fault_23_slow_campaign_values_get_a_safe_answer_in_time(tmp_path: Path) -> None:
    never = asyncio.Event()

    class SlowCampaigns:
        """A campaign store whose database never answers."""

        async def call_parameters(self, attempt: int) -> dict[str, str]:
            await never.wait()
            return {}

    async with stack(tmp_path, VOICEFSM_WEBHOOK_DEADLINE_S=0.5) as s:
        s.app.state.voicefsm_campaigns = SlowCampaigns()
        form = {"CallSid": sid(231), "From": CALLER}
        path = "/twilio/voice?campaign_attempt=7"
        started = time.monotonic()
        response = await s.http.post(path, data=form, headers=signed(path, form))
        took = time.monotonic() - started
        assert response.status_code == 200 and took < 2.0
        root = ET.fromstring(response.text)
        assert [child.tag for child in root] == ["Say", "Hangup"] and "call again" in (root[0].text or "")
        assert await s.state.registry.outstanding() == 0  # no line held for a call that was not taken


# -- 24 -----------------------------------------------------------------------------------------------------


async def test_fault_24_status_callbacks_never_crash_and_only_move_a_call_forward(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        # Unknown CallSid, unknown status, no status at all: accepted, nothing recorded.
        for form in (
            {"CallSid": sid(240), "CallStatus": "completed"},
            {"CallSid": sid(240), "CallStatus": "exploded"},
            {"CallSid": sid(240)},
            {"CallSid": sid(240), "StreamSid": sid(240, "MZ"), "StreamEvent": "stream-stopped"},
            {"MessageSid": sid(240, "SM"), "MessageStatus": "delivered"},
        ):
            assert (await s.post("/twilio/status", form)).status_code == 204
        # Answered, then ended at Twilio before its stream started; then late, out-of-order callbacks.
        token = await answered(s, sid(241))
        for status in ("completed", "ringing", "in-progress", "completed"):
            reply = await s.post("/twilio/status", {"CallSid": sid(241), "CallStatus": status})
            assert reply.status_code == 204
        assert await s.state.registry.outstanding() == 0  # its line is free again
        async with s.stream(sid(241), token) as late_stream:
            assert await late_stream.wait_closed() == 1008  # the withdrawn ticket opens nothing
        await answered(s, sid(242))
        await s.post("/twilio/status", {"CallSid": sid(242), "CallStatus": "no-answer"})
        # A running call that Twilio says has ended is ended, and its record closed.
        token = await answered(s, sid(243))
        async with s.stream(sid(243), token) as twilio:
            await twilio.wait_for("mark", timeout_s=20)
            await s.post("/twilio/status", {"CallSid": sid(243), "CallStatus": "in-progress"})
            assert not twilio.closed
            await s.post("/twilio/status", {"CallSid": sid(243), "CallStatus": "completed"})
            assert await twilio.wait_closed(timeout_s=10) == 1000
        await asyncio.wait_for(s.state.registry.idle.wait(), 10)
        await s.post("/twilio/status", {"CallSid": sid(243), "CallStatus": "in-progress"})
        await s.flushed()
        assert s.call(sid(240)) is None
        outcome, ended_at = s.call(sid(241)) or (None, None)
        assert (outcome, ended_at is not None) == ("hung_up", True)
        assert (s.call(sid(242)) or (None,))[0] == "no_answer"
        outcome, ended_at = s.call(sid(243)) or (None, None)
        assert outcome is not None and ended_at is not None
        assert s.rows("SELECT count(*) FROM calls WHERE ended_at IS NULL") == [(0,)]


# -- a served process: 11 and 46 ---------------------------------------------------------------------------


@dataclass
class Served:
    process: asyncio.subprocess.Process
    url: str
    stderr_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def peak_rss_kib(self) -> int:
        """The process's high-water mark of resident memory (VmHWM), KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match is not None, status
        return int(match.group(1))


@contextlib.asynccontextmanager
async def voicefsm_serve(cwd: Path, flow: Path, **env: str) -> AsyncIterator[Served]:
    """``voicefsm serve FLOW --port 0`` in dev mode with its records in ``cwd``; its URL from the banner."""
    prefixes = ("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PUBLIC_URL", "DATABASE_URL")
    clean = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    clean["VOICEFSM_PROMPT_CACHE_DIR"] = os.environ.get("VOICEFSM_PROMPT_CACHE_DIR", str(cwd / "prompts"))
    stderr_path = cwd / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicefsm", "serve", str(flow), "--port", "0",
            cwd=cwd, env={**clean, "VOICEFSM_PROMPT_WARM": "false", **env},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while True:
                    line = (await process.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(f"serve exited before listening:\n{stderr_path.read_text()}")
                    if ready := READY.search(line):
                        break
            yield Served(process, ready.group(1), stderr_path)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_fault_11_huge_text_frames_close_with_1009_and_memory_stays_flat(tmp_path: Path) -> None:
    async with voicefsm_serve(tmp_path, ECHO) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        before = served.peak_rss_kib()
        for size in (1_000_000, 16 * 1024 * 1024):
            async with connect(f"{served.ws_url}/twilio/stream", max_size=None) as ws:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send("x" * size)
                    await asyncio.wait_for(ws.recv(), 10)
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 10)
                assert ws.close_code == 1009, (size, ws.close_code, ws.close_reason)
        grown_kib = served.peak_rss_kib() - before
        assert grown_kib < 4 * 1024, f"the server's peak memory grew by {grown_kib} KiB"
        health = (await http.get("/healthz")).json()
        assert (health["status"], health["active_calls"]) == ("ok", 0)


async def test_fault_46_sigterm_drains_answered_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    live, answered_before, after = sid(461), sid(462), sid(463)
    async with (
        voicefsm_serve(tmp_path, ECHO, VOICEFSM_DRAIN_TIMEOUT_S="2") as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):

        async def ring(call_sid: str) -> httpx.Response:
            return await http.post("/twilio/voice", data={"CallSid": call_sid, "From": CALLER})

        first = stream_token((await ring(live)).text)
        second = stream_token((await ring(answered_before)).text)
        assert first and second
        stream = f"{served.ws_url}/twilio/stream"
        async with TwilioStreamClient(stream, call_sid=live, custom_parameters={"token": first}) as one:
            await one.wait_for("mark", timeout_s=20)
            served.process.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            ready = await eventually(
                lambda: http.get("/readyz"), lambda r: r.status_code == 503, "readyz 503"
            )
            assert "draining" in ready.json()["problems"][0]
            health = await http.get("/healthz")
            assert (health.status_code, health.json()["status"]) == (200, "draining")  # alive, not ready
            turned_away = await ring(after)
            assert stream_token(turned_away.text) is None and "busy" in turned_away.text
            # The call answered before the drain still gets its stream, and runs.
            async with TwilioStreamClient(
                stream, call_sid=answered_before, custom_parameters={"token": second}
            ) as two:
                await two.wait_for("mark", timeout_s=20)
                assert not one.closed
                # After the grace both are ended by the server, cleanly.
                assert await one.wait_closed(timeout_s=20) == 1000
                assert await two.wait_closed(timeout_s=20) == 1000
        assert await asyncio.wait_for(served.process.wait(), 20) == 0
        took = time.monotonic() - sent_at
    assert took < 25, f"SIGTERM to exit took {took:.1f} s"
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'voicefsm.db'}")
    try:
        records = {c: await store.get_call(c) for c in (live, answered_before, after)}
    finally:
        await store.aclose()
    assert records[after] is None
    for call_sid in (live, answered_before):
        record = records[call_sid]
        assert record is not None and record.ended_at is not None, call_sid
        assert record.outcome not in (None, "abandoned"), record.outcome
    assert "2 call(s) were still running at the drain deadline" in served.stderr_path.read_text()


# -- helpers -------------------------------------------------------------------------------------------------


async def eventually(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout_s: float = 10.0
) -> T:
    """Re-request ``fetch()`` until ``done`` holds, bounded: only for a served process's state, which offers
    nothing to await (the start of its drain)."""
    seen: list[T] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not seen or not done(seen[-1]):
                seen[:] = [await fetch()]
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}; last seen: {seen}") from None
    return seen[-1]
