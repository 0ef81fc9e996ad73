"""The ASGI app uvicorn serves: media streams straight to their handler, everything else to FastAPI.

A call's media stream is one WebSocket that lives as long as the call, and every frame of audio
goes out through it. Through FastAPI it passes the app's whole middleware stack (eight layers) and
router to open, and every message sent goes back out through their send wrappers: about 5 % of
a call's set-up CPU in a py-spy profile of 600 echo calls, for layers that have nothing to do
for it:

- voicefsm's own middlewares let these paths through untouched: access control leaves ``/twilio/``
  open (the route checks Twilio's signature itself, server/twilio_routes.py) and the limits apply
  to HTTP requests (a stream is admitted by the call registry and the capacity check);
- the route takes no dependencies, so FastAPI's exit stack and dependency solving have no work;
- an exception from the handler reaches uvicorn either way, which logs it and closes with 1011.

So the handler gets the same starlette ``WebSocket`` it got from FastAPI (``websocket.app`` is the
FastAPI app, its state included), on the same port; every other request, and a WebSocket on any
other path (the live call events), goes to the app as before. With OpenTelemetry on
(``VOICEFSM_OTEL_ENDPOINT``) the app carries the instrumentation's middleware, which makes the
span of each request, media streams included: then streams go through the app as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from voicefsm.observability.tracing import HTTP_SPANS
from voicefsm.server.twilio_routes import media_stream
from voicefsm.settings import STREAM_PATH

WebSocketHandler = Callable[[WebSocket], Awaitable[None]]


class StreamsFirst:
    """``app`` with the WebSocket routes in ``routes`` (path -> handler) served ahead of it."""

    def __init__(self, app: FastAPI, routes: Mapping[str, WebSocketHandler] | None = None) -> None:
        self.app = app
        self.routes = dict(routes if routes is not None else {STREAM_PATH: media_stream})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not getattr(self.app.state, HTTP_SPANS, False):
            handler = self.routes.get(get_route_path(scope))  # what the app's router matches
            if handler is not None:
                scope["app"] = self.app  # what Starlette sets: the handler reads the app's state through it
                await handler(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)


__all__ = ["StreamsFirst"]
