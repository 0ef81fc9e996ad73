"""Log lines for operators: plain text (the default) or one JSON object a line, the call SID on each.

:func:`configure_logging` installs one handler on the root logger (and routes uvicorn's loggers to
it). Both formats go through :class:`Redactor`, which masks phone numbers (E.164 ``+15551234567`` and
long digit runs) and every secret it was given (auth tokens, API keys), in the message, the
arguments and the exception text: callers' numbers and credentials never reach a log line, whatever
a library put in its message.

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``call_sid`` when the
line was logged during a call (:func:`voicefsm.observability.context.current_call`), and
``exception`` when it carries one. With OpenTelemetry configured, ``trace_id`` and ``span_id`` tie
the line to its trace.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

from voicefsm.observability.context import current_call

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(call_tag)s: %(message)s"

#: A phone number: E.164 (``+`` and 7 to 15 digits, spaces or dashes allowed between groups), or a bare
#: run of 10 to 15 digits that is not part of a word, an identifier or a decimal number.
_PHONE = re.compile(r"(?<![\w+])\+\d(?:[ \-]?\d){6,14}(?!\w)|(?<![\w.+])\d{10,15}(?![\w.])")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
NUMBER_MASK = "[number]"
SECRET_MASK = "[secret]"
_HANDLER_NAME = "voicefsm"


class Redactor:
    """Masks phone numbers, ``Bearer`` credentials and the given secrets in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, SECRET_MASK)
        text = _BEARER.sub(lambda match: f"{match.group(1)} {SECRET_MASK}", text)
        return _PHONE.sub(NUMBER_MASK, text)


class CallContextFilter(logging.Filter):
    """Stamps each record with the call it was logged for (``record.call_sid``), and masks it.

    The message is rendered and redacted here, once, so every handler and formatter sees the
    masked text; the exception is rendered and masked too.
    """

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        call_sid = getattr(record, "call_sid", None) or current_call()
        record.call_sid = call_sid
        record.call_tag = f" [{call_sid}]" if call_sid else ""
        if not getattr(record, "_voicefsm_redacted", False):
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # rendered (and masked) above: formatters use exc_text
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
            record._voicefsm_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, call_sid, exception (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_sid = getattr(record, "call_sid", None)
        if call_sid:
            entry["call_sid"] = call_sid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        trace_id, span_id = _trace_ids()
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The default text line, with ``[CA...]`` after the logger's name during a call."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "call_tag"):
            record.call_tag = ""
        return super().format(record)


def configure_logging(
    log_format: LogFormat = "text",
    *,
    level: int = logging.WARNING,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log line (uvicorn's included) to ``stream`` (stderr) in ``log_format``; returns the handler.

    Replaces the handler a previous call installed, so it can be called again (tests, ``serve``
    after the CLI's default set-up). ``secrets`` are masked wherever they appear.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(CallContextFilter(Redactor(secrets)))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from before, or basicConfig's plain one (not a subclass: a test runner's capture stays).
        if old.get_name() == _HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler


def _trace_ids() -> tuple[str | None, str | None]:
    try:
        from opentelemetry import trace
    except ImportError:
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def logging_configured() -> bool:
    """Whether :func:`configure_logging` installed its handler (then uvicorn must keep its hands off)."""
    return any(handler.get_name() == _HANDLER_NAME for handler in logging.getLogger().handlers)
