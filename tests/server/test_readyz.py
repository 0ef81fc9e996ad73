"""/readyz: ready, draining, and a database that does not answer (a socket that accepts and stays silent)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from voicefsm.records import CallStore
from voicefsm.server.app import create_app
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings


@contextlib.asynccontextmanager
async def silent_database() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (a hung PostgreSQL)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readyz_is_200_with_a_database_that_answers_and_503_while_draining(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        app = create_app(Settings(_env_file=None), store=store)  # type: ignore[call-arg]
        async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready", "problems": []})
            app.state.voicefsm.draining = True
            draining = await http.get("/readyz")
            assert draining.status_code == 503
            assert draining.json()["problems"] == [
                "draining: the server is shutting down and takes no new calls"
            ]
            assert (await http.get("/healthz")).status_code == 200  # alive all the same
    finally:
        await store.aclose()


async def test_readyz_is_503_in_time_when_the_database_does_not_answer() -> None:
    async with silent_database() as port:
        engine = create_async_engine(
            f"postgresql+asyncpg://voicefsm:secret@127.0.0.1:{port}/voicefsm", connect_args={"timeout": 30}
        )
        store = CallStore(engine)
        try:
            settings = Settings(_env_file=None, VOICEFSM_READYZ_DB_TIMEOUT_S=0.5)  # type: ignore[call-arg]
            app = create_app(settings, store=store)
            async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
                started = time.monotonic()
                answer = await http.get("/readyz")
                took = time.monotonic() - started
        finally:
            await store.aclose()
    assert answer.status_code == 503
    assert answer.json()["problems"] == ["database: no answer to a ping within 0.5 s"]
    assert took < 3.0, f"/readyz took {took:.1f} s"
    assert "secret" not in answer.text
