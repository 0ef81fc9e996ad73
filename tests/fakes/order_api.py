"""A loopback order API for flows/order_status.py: a real HTTP server on 127.0.0.1, in the test's loop.

``GET /orders/{number}`` answers 200 with the order's JSON, or 404. Faults are scripted per order
number: ``api.fail[number] = 503`` answers that status; ``api.hold.add(number)`` makes the request
wait until :meth:`OrderApi.release` (or the server stops), so a step's timeout can be tested
on the flow's virtual clock. Every request path is recorded in :attr:`OrderApi.requests`.

The server runs on the test's own event loop. Give the flow a client without keep-alive
(:func:`client_for`): a VirtualClock was seen to jump while a request on a reused connection was in
flight (the loop looked idle), while a request on a new connection is seen through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from voicefsm.server.serving import running_server

ORDERS: dict[str, dict[str, str]] = {
    "123456": {"number": "123456", "status": "shipped", "eta": "2024-06-05"},
    "345678": {"number": "345678", "status": "out for delivery", "eta": "2024-06-03"},
}


class OrderApi:
    """The fake's state: its orders, scripted faults, held requests and the requests seen."""

    def __init__(self) -> None:
        self.orders = {number: dict(order) for number, order in ORDERS.items()}
        self.fail: dict[str, int] = {}
        self.hold: set[str] = set()
        self.requests: list[str] = []
        self.base_url = ""
        self._released = asyncio.Event()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Return once no request is being handled (e.g. a held one after :meth:`release`)."""
        await self._idle.wait()

    def release(self) -> None:
        """Let held requests answer."""
        self._released.set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/orders/{number}")
        async def order(number: str) -> JSONResponse:
            self.requests.append(f"/orders/{number}")
            self._busy += 1
            self._idle.clear()
            try:
                if number in self.hold:
                    await self._released.wait()
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()
            if number in self.fail:
                return JSONResponse({"detail": "order system unavailable"}, status_code=self.fail[number])
            found = self.orders.get(number)
            if found is None:
                return JSONResponse({"detail": f"no order {number}"}, status_code=404)
            return JSONResponse(found)

        return app


@contextlib.asynccontextmanager
async def order_api() -> AsyncIterator[OrderApi]:
    """Serve a fresh :class:`OrderApi` on a free loopback port until the block exits."""
    api = OrderApi()
    async with running_server(api.app()) as server:
        api.base_url = server.http_url
        try:
            yield api
        finally:
            api.release()


def client_for(api: OrderApi) -> httpx.AsyncClient:
    """An HTTP client of ``api`` as the flow's ``shop`` resource: a new connection per request (see above)."""
    return httpx.AsyncClient(
        base_url=api.base_url, timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)
    )
