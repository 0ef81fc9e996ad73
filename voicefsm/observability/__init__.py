"""Observability: the call SID on every log line, JSON logs, OpenTelemetry traces.

Below every layer that runs calls (runtime, providers, records, server all may import it), above
nothing of voicefsm: :mod:`~voicefsm.observability.context` (which call a line of code works for),
:mod:`~voicefsm.observability.logs` (text or JSON lines, phone numbers and secrets masked) and
:mod:`~voicefsm.observability.tracing` (spans; no-ops until OpenTelemetry is configured).
"""

from voicefsm.observability.context import bind_call, current_call
from voicefsm.observability.tracing import span

__all__ = ["bind_call", "current_call", "span"]
