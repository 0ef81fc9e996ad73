"""Media streams are served ahead of FastAPI; every other request still goes through the app."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicefsm.observability.tracing import HTTP_SPANS
from voicefsm.server.serving import server_config
from voicefsm.server.streams_first import StreamsFirst
from voicefsm.settings import STREAM_PATH


class Seen:
    """An app middleware that writes down each request that went through the app's stack."""

    def __init__(self, app: ASGIApp, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            self.paths.append(f"{scope['type']} {scope['path']}")
        await self.app(scope, receive, send)


def app_with_routes(seen: list[str], handled: list[tuple[str, object]]) -> FastAPI:
    app = FastAPI()
    app.state.name = "the app"
    app.add_middleware(Seen, paths=seen)

    @app.websocket("/other")
    async def other(websocket: WebSocket) -> None:
        handled.append(("other", websocket.app))
        await websocket.close()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def exchange(asgi: ASGIApp, scope: dict[str, Any]) -> list[Message]:
    """Run one request through ``asgi`` with a client that connects (or sends an empty GET)."""
    sent: list[Message] = []
    first = {"type": "websocket.connect"} if scope["type"] == "websocket" else {"type": "http.request"}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait(first)

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        sent.append(message)

    async with asyncio.timeout(5):
        await asgi(scope, receive, send)
    return sent


def scope(kind: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "path": path,
        "root_path": root_path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "method": "GET",
        "scheme": "ws" if kind == "websocket" else "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 5000),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }


async def test_a_media_stream_reaches_its_handler_without_the_apps_stack() -> None:
    seen: list[str] = []
    handled: list[tuple[str, object]] = []
    app = app_with_routes(seen, handled)

    async def stream(websocket: WebSocket) -> None:
        handled.append(("stream", websocket.app.state.name))
        await websocket.accept()
        await websocket.close()

    served = StreamsFirst(app, {STREAM_PATH: stream})
    sent = await exchange(served, scope("websocket", STREAM_PATH))
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close"]
    assert handled == [("stream", "the app")]  # the handler sees the app and its state
    assert seen == []  # the app's middleware never saw it

    # Behind a proxy's root path the same stream is still recognised.
    await exchange(served, scope("websocket", f"/voice{STREAM_PATH}", root_path="/voice"))
    assert handled[-1] == ("stream", "the app") and seen == []


async def test_every_other_request_goes_through_the_app() -> None:
    seen: list[str] = []
    handled: list[tuple[str, object]] = []
    app = app_with_routes(seen, handled)
    served = StreamsFirst(app, {STREAM_PATH: lambda websocket: asyncio.sleep(0)})

    await exchange(served, scope("websocket", "/other"))
    sent = await exchange(served, scope("http", "/ping"))
    assert seen == ["websocket /other", "http /ping"]
    assert handled == [("other", app)]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200


async def test_a_traced_app_keeps_its_span_of_each_stream() -> None:
    """With OpenTelemetry's middleware in the app, streams go through it (it makes their span)."""
    seen: list[str] = []
    handled: list[tuple[str, object]] = []
    app = app_with_routes(seen, handled)
    setattr(app.state, HTTP_SPANS, True)  # what observability.tracing.instrument_app sets

    @app.websocket(STREAM_PATH)
    async def routed(websocket: WebSocket) -> None:
        handled.append(("routed", websocket.app))
        await websocket.close()

    async def stream(websocket: WebSocket) -> None:
        handled.append(("stream", websocket.app))

    await exchange(StreamsFirst(app, {STREAM_PATH: stream}), scope("websocket", STREAM_PATH))
    assert handled == [("routed", app)] and seen == [f"websocket {STREAM_PATH}"]


def test_uvicorn_serves_the_app_with_media_streams_first() -> None:
    app = FastAPI()
    served = server_config(app).app
    assert isinstance(served, StreamsFirst) and served.app is app
    assert set(served.routes) == {STREAM_PATH}
