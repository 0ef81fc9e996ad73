"""Put a flow on the line: choose providers, open the records, build the app, serve until told to stop."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from voicefsm.core.actions import TelephonyActions
from voicefsm.flow import VoiceFlow, open_resources
from voicefsm.observability.tracing import configure_tracing, instrument_app
from voicefsm.providers.base import SpeechToText, TextToSpeech
from voicefsm.providers.fallback import resilient_tts
from voicefsm.providers.registry import choose_provider, create_stt, create_tts, get_stt_class, get_tts_class
from voicefsm.records import CallStore, RecordWriter
from voicefsm.records.snapshots import SnapshotStore
from voicefsm.runtime.driver import CallLimits
from voicefsm.runtime.snapshot import SnapshotKeeper
from voicefsm.runtime.watchdog import LoopWatchdog, Stall
from voicefsm.server.app import create_app
from voicefsm.server.campaign_wiring import server_campaigns
from voicefsm.server.flow_service import FlowService
from voicefsm.server.leases import LeaseKeeper, listed, worker_name
from voicefsm.server.live import LiveFeeds
from voicefsm.server.metrics import Metrics
from voicefsm.server.prompt_warmup import PromptCaching, WarmProgress, prompt_caching
from voicefsm.server.serving import RunningServer, running_server, serve_until_signalled
from voicefsm.settings import Settings
from voicefsm.telephony.recording import RecordingActions
from voicefsm.telephony.twilio.rest import TwilioRest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``voicefsm serve`` will run, decided before anything starts."""

    flow: type[VoiceFlow]
    stt_name: str | None
    tts_name: str
    telephony: str


def plan(
    settings: Settings, flow: type[VoiceFlow], *, stt: str | None = None, tts: str | None = None
) -> Plan:
    """Choose providers (the option given > credentials present > local) and check they can be built.

    Raises ProviderUnavailable with the fix (e.g. the pip extra to install) when one cannot.
    """
    stt_name = choose_provider("stt", settings, stt) if flow.uses_stt else None
    tts_name = choose_provider("tts", settings, tts)
    if stt_name is not None:
        get_stt_class(stt_name)
    get_tts_class(tts_name)
    telephony = "twilio" if settings.twilio_account_sid and settings.twilio_auth_token else "recorded (dev)"
    return Plan(flow, stt_name, tts_name, telephony)


def telephony_actions(settings: Settings) -> TelephonyActions:
    """Twilio REST when credentials are set; otherwise actions are only recorded (and logged)."""
    if settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_phone_number:
        return TwilioRest.from_settings(settings)
    return RecordingActions()


def flow_service(
    settings: Settings,
    chosen: Plan,
    *,
    limits: CallLimits | None = None,
    writer: RecordWriter | None = None,
    feeds: LiveFeeds | None = None,
    metrics: Metrics | None = None,
    prompts: PromptCaching | None = None,
) -> FlowService:
    """The per-call wiring for the chosen flow and providers; calls report to writer, feeds and metrics.

    Each call's synthesizer is the provider behind the prompt cache (when ``prompts`` has one), inside
    the deadline/retry/fallback wrapper: the cache sees only the chosen voice's complete prompts, never
    a fallback voice's audio nor a retried prompt's restarted one.
    """
    stt_factory: Callable[[], SpeechToText] | None = None
    if chosen.stt_name is not None:
        stt_name = chosen.stt_name

        def stt_factory() -> SpeechToText:
            return create_stt(stt_name, settings)

    def provider() -> TextToSpeech:
        return create_tts(chosen.tts_name, settings)

    primary = prompts.wrap(provider) if prompts is not None else provider
    metrics = metrics or Metrics()

    def tts_factory() -> TextToSpeech:
        # deadline, one retry, VOICEFSM_TTS_FALLBACK; retries and fallbacks counted in /metrics (ops)
        return resilient_tts(chosen.tts_name, settings, primary=primary(), on_event=metrics.tts_event)

    recordings = Path(settings.recordings_dir) if settings.recordings_dir else None
    return FlowService(
        chosen.flow,
        tts_factory=tts_factory,
        stt_factory=stt_factory,
        actions=telephony_actions(settings),
        recordings_dir=recordings,
        limits=limits or CallLimits(idle_timeout_s=settings.stream_idle_timeout_s),
        writer=writer,
        feeds=feeds or LiveFeeds(),
        metrics=metrics,
        voice_monitor=settings.voice_monitor,
        speak_ahead=settings.speak_ahead,
    )


@contextlib.asynccontextmanager
async def flow_app(
    settings: Settings, chosen: Plan, *, progress: WarmProgress | None = None
) -> AsyncIterator[FastAPI]:
    """A ready app for ``chosen``: its records, the flow's resources and campaigns open, its fixed
    prompts cached; all closed on exit. The loop-lag watchdog runs while the app does and counts
    stalls in ``/metrics``.
    """
    # ops: traces over OTLP when an endpoint is set (VOICEFSM_OTEL_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT)
    tracing = (
        configure_tracing(settings.otel_endpoint, service_name=settings.otel_service_name)
        if settings.otel_endpoint
        else None
    )
    try:
        store = await CallStore.open(settings.db_url)
    except BaseException:
        if tracing is not None:
            tracing.shutdown()
        raise
    try:
        store.worker, store.lease_s = worker_name(settings), settings.call_lease_s
        recovered = await store.abandon_calls()  # this worker's earlier run's, and lapsed ones
        if recovered:
            log.warning(
                "marked %d call(s) abandoned, left unfinished by an earlier run of %s or by a worker "
                "whose lease lapsed: %s",
                len(recovered),
                store.worker,
                listed(recovered),
            )
        public_base = settings.public_base_url() or f"http://{settings.host}:{settings.port}"
        fakes = settings.fake_resources  # each call gets the declared fakes; nothing real is opened
        opened: contextlib.AbstractAsyncContextManager[Mapping[str, object]] = (
            contextlib.nullcontext({}) if fakes else open_resources(chosen.flow, settings)
        )
        async with (
            # Records left at shutdown get 2 s: SIGTERM to exit stays within 25 s (drain 20 + hang-up 3 + 2).
            RecordWriter(
                store,
                drain_timeout_s=2.0,
                spool_dir=settings.records_spool_path(),
                spool_max_bytes=int(settings.records_spool_max_mb * 1024 * 1024),
            ) as writer,
            SnapshotKeeper(SnapshotStore.of(store)) as snapshots,  # calls resume after a lost stream
            opened as resources,
            prompt_caching(settings, chosen.flow, chosen.tts_name) as prompts,
            server_campaigns(settings, public_base) as campaigns,
        ):
            service = flow_service(settings, chosen, writer=writer, prompts=prompts)
            service.resources, service.fake_resources = resources, fakes
            service.snapshots = snapshots

            def stalled(stall: Stall) -> None:
                service.metrics.loop_stalled(stall.duration_s)

            async with LoopWatchdog(on_stall=stalled):
                app = create_app(
                    settings,
                    service.services(),
                    store=store,
                    writer=writer,
                    flow_description=service.description(),
                    feeds=service.feeds,
                    metrics=service.metrics,
                    campaigns=campaigns,
                )
                service.metrics.watch_prompt_cache(prompts.cache)
                service.metrics.watch_records(writer)
                if tracing is not None:
                    instrument_app(app, tracing)
                warmed = await prompts.warm(lambda: create_tts(chosen.tts_name, settings), progress=progress)
                if failed := sum(1 for result in warmed if result.source is None):
                    service.metrics.prompt_warm_failed(failed)
                registry = app.state.voicefsm.registry
                async with LeaseKeeper(store, lambda: registry.active.keys()):
                    yield app
    finally:
        try:
            await store.aclose()
        finally:
            if tracing is not None:
                tracing.shutdown()


async def serve(
    settings: Settings,
    chosen: Plan,
    *,
    on_ready: Callable[[RunningServer], None],
    on_progress: WarmProgress | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain; returns how many calls had to be cut short.

    ``sock``: the listening socket a ``serve --workers`` supervisor handed this worker.
    """
    async with flow_app(settings, chosen, progress=on_progress) as app:
        return await serve_until_signalled(
            app,
            settings.host,
            settings.port,
            drain_timeout_s=settings.drain_timeout_s,
            on_ready=on_ready,
            sock=sock,
        )


@contextlib.asynccontextmanager
async def serving(settings: Settings, chosen: Plan) -> AsyncIterator[tuple[FastAPI, RunningServer]]:
    """Serve in the background of the current loop (tests, benchmarks, the bridge)."""
    async with flow_app(settings, chosen) as app, running_server(app, settings.host, settings.port) as server:
        yield app, server
