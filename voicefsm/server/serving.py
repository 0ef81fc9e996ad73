"""Run an app with uvicorn inside the current event loop: for the CLI, tests, benchmarks and the bridge."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from voicefsm.observability.logs import logging_configured
from voicefsm.server.streams_first import StreamsFirst

#: Twilio frames are a few hundred bytes. A message over 64 KiB is dropped unparsed by the stream's
#: parser (the call goes on); one over this cap closes the socket with 1009 ("message too big") in the
#: WebSocket layer, from its frame header: before it is read whole, let alone parsed.
WS_MAX_SIZE = 256 * 1024
#: After the drain's grace, the calls still live are asked to end; this long for them to wind down.
HANGUP_GRACE_S = 3.0
#: Then HTTP connections still open get this long before they are closed and the process exits.
SHUTDOWN_GRACE_S = 1


@dataclass(frozen=True, slots=True)
class RunningServer:
    """Where a started server listens."""

    host: str
    port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def server_config(app: FastAPI, *, log_level: str = "warning", **options: object) -> uvicorn.Config:
    """uvicorn settings voicefsm relies on: a WebSocket size cap, quick pings off, and no proxy headers.

    The app is served behind :class:`~voicefsm.server.streams_first.StreamsFirst`: media streams go
    straight to their handler, not through FastAPI's middleware stack and router.

    uvicorn would otherwise take the client address from X-Forwarded-For whenever the peer is
    127.0.0.1; voicefsm decides that itself (``VOICEFSM_TRUSTED_PROXIES``, server/limits.py).
    """
    if logging_configured():  # ops: `serve` set up text/JSON lines; uvicorn's own config would bypass them
        options.setdefault("log_config", None)
    return uvicorn.Config(
        StreamsFirst(app),
        log_level=log_level,
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=None,
        proxy_headers=False,
        # After the drain, a connection still open (a stuck or slow client) may not hold the exit up.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        lifespan="on",
        **options,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``host:port`` (0 = any free port) until the block exits; startup is awaited.

    ``sock``: accept on this bound socket instead (``serve --workers``: one socket, N processes).
    """
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    server = uvicorn.Server(server_config(app))
    config = server.config
    if not config.loaded:
        config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    if server.should_exit:
        sock.close()
        raise RuntimeError(f"the server could not start on {host}:{port}")
    main_loop = asyncio.create_task(server.main_loop(), name="uvicorn-main-loop")
    try:
        yield RunningServer(host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        await main_loop
        await server.shutdown(sockets=[sock])
        sock.close()


async def drain(app: FastAPI, timeout_s: float, *, hangup_grace_s: float = HANGUP_GRACE_S) -> int:
    """Stop taking calls, let answered ones finish for ``timeout_s``, then hang up the rest.

    From the first moment: the voice webhook answers busy TwiML and ``/readyz`` 503, while streams of
    calls answered before (their ticket was issued) are still admitted and run. After ``timeout_s``
    the calls still live are asked to end (reason "server shutdown") and get ``hangup_grace_s`` to
    close; each call's session writes its record as it closes. Returns how many had to be ended.
    """
    state = app.state.voicefsm
    state.draining = True
    # No new campaign calls while draining: the voice webhook now answers "busy", so a callee who
    # picked up would hear that and the attempt would be spent. (An undialed number goes back to pending.)
    campaigns = getattr(getattr(app.state, "voicefsm_campaigns", None), "opened", None)
    if campaigns is not None:
        await campaigns.stop_workers()
    registry = state.registry
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                await registry.idle.wait()
                if not await registry.outstanding():
                    break
                # An answered call's stream is on its way (it comes within a second or two of the
                # webhook; a ticket Twilio will not use is withdrawn by its status callback).
                await asyncio.sleep(0.1)
    remaining = list(registry.active.values())
    for call in remaining:
        call.request_disconnect("server shutdown")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(hangup_grace_s):
            await registry.idle.wait()
    return len(remaining)


def settle_heap() -> None:
    """Move everything start-up made (modules, the app, flows, warmed prompts) out of the collector's sight.

    A full collection otherwise walks those few hundred thousand long-lived objects again and
    again while calls run, stopping the loop for 100-250 ms each time (measured at 100 booking
    calls). Collected first, so no garbage is frozen; call objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


async def serve_until_signalled(
    app: FastAPI,
    host: str,
    port: int,
    *,
    drain_timeout_s: float,
    on_ready: Callable[[RunningServer], None] | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then drain gracefully. Returns the number of calls cut short."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_server(app, host, port, sock=sock) as server:
            settle_heap()
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
            return await drain(app, drain_timeout_s)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
