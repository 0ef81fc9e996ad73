"""OpenTelemetry traces: a span per call, per turn, per provider request; exported over OTLP/HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_logs import CALL, CALLER, free_port, phone, serve, wait_ready

from voicefsm.errors import ProviderError
from voicefsm.flow import Hangup, Say, VoiceFlow
from voicefsm.observability.logs import configure_logging
from voicefsm.observability.tracing import (
    NO_SPAN,
    Tracing,
    _set_provider,
    configure_tracing,
    span,
    start_span,
    traces_url,
)
from voicefsm.providers.fallback import ResilientTextToSpeech
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.records import CallStore, RecordWriter
from voicefsm.runtime.driver import CallLimits
from voicefsm.server.app import create_app
from voicefsm.server.flow_service import FlowService
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings
from voicefsm.telephony.recording import RecordingActions
from voicefsm.telephony.twilio.client import TwilioStreamClient


class TwoPrompts(VoiceFlow):
    hello = Say("Hello there.", initial=True, barge_in=False)
    bye = Hangup("Goodbye.")

    spoken = hello.to(bye)


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing: Tracing = configure_tracing("http://127.0.0.1:9", exporter=exporter, batch=False)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_without_configuration_a_span_is_a_no_op() -> None:
    # Not even the API's no-op span: nothing is built (a call's set-up and each turn make several).
    with span("voicefsm.anything", call_sid=CALL) as nothing:
        nothing.set_attribute("voicefsm.x", 1)  # accepted and dropped
    assert nothing is NO_SPAN and start_span("voicefsm.stt", provider="local") is NO_SPAN


def test_a_provider_the_application_installed_gets_the_spans() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_provider(provider)
    try:
        with span("voicefsm.anything", call_sid=CALL):
            pass
    finally:
        _set_provider(trace.NoOpTracerProvider())
    assert [finished.name for finished in exporter.get_finished_spans()] == ["voicefsm.anything"]
    with span("voicefsm.after") as nothing:  # the no-op provider put back: no-ops again
        assert nothing is NO_SPAN


def test_the_traces_url_is_the_collectors_v1_traces_unless_a_path_is_given() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://x.example/otlp/v1/traces") == "https://x.example/otlp/v1/traces"


@contextlib.asynccontextmanager
async def served_flow(tmp_path: Path, tts: ResilientTextToSpeech | None = None) -> AsyncIterator[str]:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        async with RecordWriter(store) as writer:
            service = FlowService(
                TwoPrompts,
                tts_factory=(lambda: tts) if tts is not None else ScriptedTextToSpeech,
                stt_factory=ScriptedSpeechToText,
                actions=RecordingActions(),
                recordings_dir=None,
                limits=CallLimits(idle_timeout_s=10.0, handler_grace_s=3.0),
                writer=writer,
            )
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
                yield f"{server.ws_url}/twilio/stream"
    finally:
        await store.aclose()


async def a_call(url: str) -> TwilioStreamClient:
    twilio = TwilioStreamClient(url, call_sid=CALL, custom_parameters={"caller": CALLER})
    await twilio.open()
    await twilio.wait_closed(timeout_s=10)
    await twilio.close()
    return twilio


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_call_is_one_trace_its_turns_and_provider_requests_inside(
    exported: InMemorySpanExporter, tmp_path: Path
) -> None:
    async with served_flow(tmp_path) as url:
        await a_call(url)
    spans = exported.get_finished_spans()
    (call,) = by_name(spans, "voicefsm.call")
    turns = by_name(spans, "voicefsm.turn")
    (stt,) = by_name(spans, "voicefsm.stt")
    assert call.attributes is not None
    assert dict(call.attributes) == {
        "voicefsm.call_sid": CALL,
        "voicefsm.flow": "TwoPrompts",
        "voicefsm.outcome": "completed",
        "voicefsm.ended_by": call.attributes["voicefsm.ended_by"],
    }
    assert [t.attributes["voicefsm.state"] for t in turns if t.attributes] == ["hello", "bye"]
    trace_id = call.context.trace_id
    for child in (*turns, stt):
        assert child.context.trace_id == trace_id
        assert child.parent is not None and child.parent.span_id == call.context.span_id
    # Nothing a caller said or their number is on any span.
    for one in spans:
        assert CALLER not in str(dict(one.attributes or {}))


async def test_a_tts_request_is_a_span_under_its_turn_retries_and_fallback_counted(
    exported: InMemorySpanExporter, tmp_path: Path
) -> None:
    failing = ScriptedTextToSpeech()
    failing.fail_next("the voice is down")
    failing.fail_next("the voice is still down")
    events: list[tuple[str, str]] = []
    tts = ResilientTextToSpeech(
        failing,
        ScriptedTextToSpeech,
        primary_name="elevenlabs",
        fallback_name="local",
        on_event=lambda kind, provider: events.append((kind, provider)),
    )
    async with served_flow(tmp_path, tts) as url:
        await a_call(url)
    spans = exported.get_finished_spans()
    requests = by_name(spans, "voicefsm.tts")
    turns = {t.context.span_id: t for t in by_name(spans, "voicefsm.turn")}
    assert len(requests) == 2
    first = requests[0]
    assert first.attributes is not None
    assert (first.attributes["voicefsm.attempts"], first.attributes["voicefsm.spoken_by"]) == (3, "local")
    assert first.parent is not None and first.parent.span_id in turns
    assert events == [("retry", "elevenlabs"), ("fallback", "local")]


async def drain(tts: ResilientTextToSpeech) -> None:
    async with contextlib.aclosing(tts.synthesize("Hello.")) as chunks:
        async for _ in chunks:
            pass


async def test_a_failed_tts_request_is_an_error_span() -> None:
    exporter = InMemorySpanExporter()
    tracing = configure_tracing("http://127.0.0.1:9", exporter=exporter, batch=False)
    try:
        failing = ScriptedTextToSpeech()
        for _ in range(2):
            failing.fail_next("down")
        tts = ResilientTextToSpeech(failing)
        with pytest.raises(ProviderError):
            await drain(tts)
    finally:
        tracing.shutdown()
    (request,) = exporter.get_finished_spans()
    assert not request.status.is_ok
    assert request.status.description == "every synthesizer failed"


# -- a served instance exports over OTLP/HTTP to a collector on loopback ------------------------------------


class Collector(http.server.ThreadingHTTPServer):
    """A tiny OTLP/HTTP receiver: decodes each ExportTraceServiceRequest and keeps its spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.spans: list[tuple[str, dict[str, str]]] = []
        self.service_names: set[str] = set()
        self.received = threading.Event()
        self.paths: list[str] = []


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.paths.append(self.path)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.server.service_names.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                for one in scope.spans:
                    attributes = {a.key: a.value.string_value for a in one.attributes}
                    self.server.spans.append((one.name, attributes))
        self.server.received.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


async def test_a_served_instance_exports_its_traces_over_otlp_http(tmp_path: Path) -> None:
    collector = Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    server = serve(
        tmp_path,
        port,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "booking-line",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, server)
        await phone(base, CALL, CALLER)
    finally:
        server.terminate()
        _, stderr = await asyncio.to_thread(server.communicate, timeout=60)
        collector.shutdown()
        thread.join()
        collector.server_close()
    assert server.returncode == 0, stderr
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert collector.service_names == {"booking-line"}
    names = [name for name, _ in collector.spans]
    calls = [attributes for name, attributes in collector.spans if name == "voicefsm.call"]
    assert len(calls) == 1
    assert (calls[0]["voicefsm.call_sid"], calls[0]["voicefsm.flow"]) == (CALL, "Booking")
    assert "voicefsm.turn" in names and "voicefsm.tts" in names and "voicefsm.stt" in names
    assert any(name.startswith("POST /twilio/voice") for name in names), names  # the FastAPI instrumentation
    assert any(name.startswith("WS /twilio/stream") or "/twilio/stream" in name for name in names), names
    # No span per media frame: the ASGI send/receive spans are left out.
    assert not [name for name in names if name.endswith((" receive", " send"))], names
    assert CALLER not in str(collector.spans)


def test_a_json_line_logged_inside_a_span_names_its_trace(exported: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    handler = configure_logging("json", level=logging.INFO, stream=stream)
    try:
        with span("voicefsm.turn", state="greet"):
            logging.getLogger("voicefsm.tests").info("inside")
        logging.getLogger("voicefsm.tests").info("outside")
    finally:
        root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])  # the next tests' log capture sees what it saw before
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    (turn,) = exported.get_finished_spans()
    assert inside["trace_id"] == f"{turn.context.trace_id:032x}"
    assert inside["span_id"] == f"{turn.context.span_id:016x}"
    assert "trace_id" not in outside
