"""The ASGI application: ``create_app(settings, services)`` builds a fresh one, with no module globals."""

from __future__ import annotations

from fastapi import FastAPI, Response

from voicefsm import __version__
from voicefsm.server.registry import CallRegistry
from voicefsm.server.services import CallServices
from voicefsm.server.state import ServerState
from voicefsm.server.twilio_routes import router as twilio_router
from voicefsm.settings import Settings


def create_app(settings: Settings, services: CallServices | None = None) -> FastAPI:
    """An app serving Twilio's webhook, media stream and status routes, plus ``/healthz``."""
    app = FastAPI(title="voicefsm", version=__version__, docs_url=None, redoc_url=None)
    state = ServerState(
        settings=settings,
        services=services or CallServices(),
        registry=CallRegistry(require_token=not settings.dev_mode),
    )
    app.state.voicefsm = state
    app.include_router(twilio_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        """Liveness and load: is the server taking calls, and how many are live."""
        return {
            "status": "draining" if state.draining else "ok",
            "active_calls": len(state.registry.active),
            "dev_mode": settings.dev_mode,
            "version": __version__,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: active calls, calls by outcome, turn latency, provider errors."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
