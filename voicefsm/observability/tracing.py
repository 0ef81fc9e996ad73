"""OpenTelemetry traces: a span per call, per turn, per provider request; no-ops until configured.

Code anywhere writes ``with span("voicefsm.tts", provider="local"):`` (or :func:`start_span` for a
span that outlives a block, e.g. an STT session or an async generator's synthesis). With the
OpenTelemetry API not installed, or no tracer provider set, these cost a function call and an
``isinstance``.

:func:`configure_tracing` (``voicefsm serve`` calls it when ``VOICEFSM_OTEL_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set) installs the SDK's tracer provider with a batching OTLP/HTTP
exporter; :func:`instrument_app` adds the FastAPI instrumentation (a span per HTTP request). Both need
``pip install 'voicefsm[otel]'``.

Attributes are namespaced ``voicefsm.*`` (``voicefsm.call_sid``, ``voicefsm.flow``,
``voicefsm.outcome``, ``voicefsm.provider``...). Nothing a caller said and no phone number is ever
put on a span.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None  # type: ignore[assignment]

TRACER_NAME = "voicefsm"
AttributeValue = str | bool | int | float


class Span(Protocol):
    """What voicefsm does with a span (OpenTelemetry's, or the no-op one)."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def record_exception(self, exception: BaseException) -> None: ...

    def end(self) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def record_exception(self, exception: BaseException) -> None:
        return None

    def end(self) -> None:
        return None


NO_SPAN = _NoSpan()


class OtelUnavailableError(RuntimeError):
    """Tracing was asked for but the OpenTelemetry SDK is not installed."""

    def __str__(self) -> str:
        return (
            "OpenTelemetry traces were asked for (VOICEFSM_OTEL_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is "
            f"set) but {self.args[0]} is not installed: pip install 'voicefsm[otel]', or unset the endpoint"
        )


def _tracing() -> bool:
    """A tracer provider is set (ours, or one the application installed): spans are worth making.

    Until then the API's own no-op path still builds a tracer, a span and a context manager for
    every span; a call's set-up and each of its turns make several.
    """
    if _trace is None:
        return False
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)


def _attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``voicefsm.``-prefixed attributes, None dropped, other values as text."""
    clean: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        name = key if "." in key else f"voicefsm.{key}"
        clean[name] = value if isinstance(value, str | bool | int | float) else str(value)
    return clean


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span around the block, current inside it (child spans and log lines see it); errors recorded.

    ``attributes`` without a dot are named ``voicefsm.<key>``; None values are left out. A no-op
    when OpenTelemetry is not configured.
    """
    if not _tracing():
        yield NO_SPAN
        return
    tracer = _trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, attributes=_attributes(attributes)) as current:
        yield current


def start_span(name: str, **attributes: Any) -> Span:
    """A span started now, a child of the current one, NOT made current: end it with ``.end()``.

    For what does not fit one block of one task: an STT session, an async generator's synthesis
    (making a span current across ``yield`` would leak it into the consumer's context).
    """
    if not _tracing():
        return NO_SPAN
    span_: Span = _trace.get_tracer(TRACER_NAME).start_span(name, attributes=_attributes(attributes))
    return span_


def mark_error(span_: Span, description: str) -> None:
    """Set the span's status to error with ``description`` (a reason, never a caller's words)."""
    if _trace is None:
        return
    setter = getattr(span_, "set_status", None)
    if setter is not None:
        setter(_trace.Status(_trace.StatusCode.ERROR, description))


# -- configuration (serve) ------------------------------------------------------------------------------


class Tracing:
    """The tracer provider ``voicefsm serve`` installed; :meth:`shutdown` flushes and stops the exporter."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def shutdown(self) -> None:
        """Export what is pending, stop the exporter and put the no-op provider back."""
        try:
            self.provider.force_flush()
        finally:
            self.provider.shutdown()
            if _trace is not None:
                _set_provider(_trace.NoOpTracerProvider())


def check_tracing_available() -> None:
    """Raise OtelUnavailableError (naming the package) when traces cannot be exported here."""
    for module, package in (
        ("opentelemetry.sdk.trace", "opentelemetry-sdk"),
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry-exporter-otlp-proto-http"),
        ("opentelemetry.instrumentation.fastapi", "opentelemetry-instrumentation-fastapi"),
    ):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise OtelUnavailableError(package) from error


def configure_tracing(
    endpoint: str, *, service_name: str = "voicefsm", exporter: Any = None, batch: bool = True
) -> Tracing:
    """Install the SDK's tracer provider exporting over OTLP/HTTP to ``endpoint`` (the collector's base
    URL, e.g. ``http://collector:4318``; ``/v1/traces`` is added unless the URL has a path).

    ``exporter`` replaces the OTLP one (tests: the SDK's in-memory exporter). Raises
    OtelUnavailableError when the SDK or the exporter is not installed.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as error:
        raise OtelUnavailableError("opentelemetry-sdk") from error
    if _trace is None:  # pragma: no cover - the SDK brings the API
        raise OtelUnavailableError("opentelemetry-api")
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise OtelUnavailableError("opentelemetry-exporter-otlp-proto-http") from error
        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _set_provider(provider)
    return Tracing(provider)


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector: ``endpoint`` + ``/v1/traces`` when it has no path."""
    base = endpoint.rstrip("/")
    scheme_end = base.find("://")
    path = base[scheme_end + 3 :].partition("/")[2] if scheme_end >= 0 else ""
    return base if path else f"{base}/v1/traces"


def _set_provider(provider: Any) -> None:
    """Make ``provider`` the global one, also when another was set before (a second app in one process)."""
    assert _trace is not None
    # The API allows one set_tracer_provider per process; a server started twice in a process (tests,
    # the bridge) replaces it through the same guard the API's own test helpers reset.
    once = getattr(_trace, "_TRACER_PROVIDER_SET_ONCE", None)
    if once is not None and getattr(once, "_done", False):
        once._done = False
    _trace.set_tracer_provider(provider)


#: Set on the state of an app :func:`instrument_app` instrumented (it makes a span of every request).
HTTP_SPANS = "voicefsm_http_spans"


def instrument_app(app: Any, tracing: Tracing) -> None:
    """Add OpenTelemetry's FastAPI instrumentation to ``app``: a span per HTTP request."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as error:
        raise OtelUnavailableError("opentelemetry-instrumentation-fastapi") from error
    # No span per ASGI message: a media stream sends 50 frames a second, each would be a span.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider,
        excluded_urls="healthz,readyz",
        exclude_spans=["receive", "send"],
    )
    # Media streams then go through the app too, for their span (server/streams_first.py).
    setattr(app.state, HTTP_SPANS, True)
