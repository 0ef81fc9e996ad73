"""The ASGI application: ``create_app(settings, services)`` builds a fresh one, with no module globals."""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from voicefsm import __version__
from voicefsm.records import CallStore, RecordWriter
from voicefsm.runtime.step_pool import step_pool
from voicefsm.server.api_routes import router as api_router
from voicefsm.server.auth import install_access_control
from voicefsm.server.campaign_routes import router as campaign_router
from voicefsm.server.limits import install_limits
from voicefsm.server.live import LiveFeeds
from voicefsm.server.metrics import Metrics
from voicefsm.server.registry import CallRegistry
from voicefsm.server.services import CallServices
from voicefsm.server.state import ServerState
from voicefsm.server.twilio_routes import router as twilio_router
from voicefsm.settings import Settings

STATIC_DIR = files("voicefsm.server") / "static"


def create_app(
    settings: Settings,
    services: CallServices | None = None,
    *,
    store: CallStore | None = None,
    writer: RecordWriter | None = None,
    flow_description: dict[str, Any] | None = None,
    feeds: LiveFeeds | None = None,
    metrics: Metrics | None = None,
    campaigns: object | None = None,
) -> FastAPI:
    """An app serving Twilio's routes, the JSON API, the browser phone, health, readiness and metrics.

    ``feeds`` and ``metrics`` are the ones the services write to (a flow service's), when given.
    """
    app = FastAPI(title="voicefsm", version=__version__, docs_url=None, redoc_url=None)
    state = ServerState(
        settings=settings,
        services=services or CallServices(),
        # Stream tickets in the database when it is one several workers or hosts can share; a SQLite
        # file serves one process (`--workers` refuses it), whose memory keeps them without a write.
        registry=CallRegistry(
            require_token=not settings.dev_mode,
            store=store if store is not None and store.engine.dialect.name != "sqlite" else None,
        ),
        store=store,
        writer=writer,
        flow_description=flow_description,
        feeds=feeds or LiveFeeds(),
        metrics=metrics or Metrics(),
    )
    app.state.voicefsm = state
    install_access_control(app, settings, state.metrics.registry)  # tokens, login, CSRF (server/auth.py)
    install_limits(app, settings, state.metrics.registry)  # outermost: sizes and rates (server/limits.py)
    app.include_router(twilio_router)
    app.include_router(api_router)
    app.state.voicefsm_campaigns = campaigns  # a CampaignService (voicefsm[campaigns]), or None
    app.include_router(campaign_router)
    static_dir = str(STATIC_DIR)
    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def phone_page() -> FileResponse:
        """The browser phone: call the flow from the microphone, keypad or keyboard."""
        return FileResponse(f"{static_dir}/index.html", media_type="text/html")

    @app.get("/calls", include_in_schema=False)
    async def history_page() -> FileResponse:
        """Past calls with transcript, path, slots and recording."""
        return FileResponse(f"{static_dir}/calls.html", media_type="text/html")

    @app.get("/healthz", response_model=None)
    async def healthz() -> dict[str, object] | JSONResponse:
        """Liveness and load: 200 while the process works (draining too; readiness is ``/readyz``), how many
        calls are live; 503 while sync flow code holds stuck threads."""
        pool = step_pool()
        body: dict[str, object] = {
            "status": "draining" if state.draining else "ok" if pool.healthy else "unhealthy",
            "active_calls": len(state.registry.active),
            "asyncio_tasks": len(asyncio.all_tasks()),  # the soak (benchmarks/soak.py) watches it for leaks
            "dev_mode": settings.dev_mode,
            "version": __version__,
            "step_pool": {
                "busy": pool.busy,
                "threads": pool.threads,
                "abandoned": pool.abandoned,
                "problem": pool.problem(),
            },
        }
        return body if pool.healthy else JSONResponse(body, status_code=503)

    @app.get("/readyz", response_model=None)
    async def readyz() -> JSONResponse:
        """Readiness: 200 when new calls are welcome; 503 while draining or when the database does not
        answer a ping within VOICEFSM_READYZ_DB_TIMEOUT_S (a load balancer then sends calls elsewhere)."""
        problems: list[str] = []
        if state.draining:
            problems.append("draining: the server is shutting down and takes no new calls")
        if state.store is not None:
            deadline = settings.readyz_db_timeout_s
            try:
                async with asyncio.timeout(deadline):
                    await state.store.ping()
            except TimeoutError:
                problems.append(f"database: no answer to a ping within {deadline:g} s")
            except Exception as error:  # the driver's error, named without its details (URLs, hosts)
                problems.append(f"database: the ping failed ({type(error).__name__})")
        body = {"status": "not ready" if problems else "ready", "problems": problems}
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: active calls, calls by outcome, turn latency, provider errors."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
