"""TwiML documents voicefsm answers with: open a media stream, dial a number, hang up, say we are busy.

Built with ``twilio.twiml.voice_response``, which only assembles XML (and escapes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import Connect, Dial, Stream, VoiceResponse

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
DIAL_TIMEOUT_RANGE_S = (5, 600)
STATUS_CALLBACK_EVENTS = "initiated ringing answered completed"


class StreamUrlError(ValueError):
    """A ``<Stream url>`` Twilio would refuse, with the Twilio error code it would report."""

    def __init__(self, url: str, code: int, problem: str, fix: str) -> None:
        super().__init__(url, code)
        self.url = url
        self.code = code
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"the media stream URL {self.url!r} {self.problem} (Twilio error {self.code}); {self.fix}"


def _check_stream_url(url: str, *, allow_insecure: bool) -> None:
    parts = urlsplit(url)
    schemes = ("wss", "ws") if allow_insecure else ("wss",)
    if parts.scheme not in schemes or not parts.netloc:
        fix = "use the public wss://host/path that Twilio reaches over TLS"
        raise StreamUrlError(url, 31910, "is not an absolute wss:// URL", fix)
    if parts.query or "?" in url:
        raise StreamUrlError(
            url,
            31920,
            "has a query string",
            "pass per-call values as <Parameter> elements instead; they arrive in start.customParameters",
        )


def stream_twiml(
    stream_url: str,
    parameters: Mapping[str, str],
    *,
    status_callback: str | None = None,
    action: str | None = None,
    allow_insecure: bool = False,
    redirect: str | None = None,
) -> str:
    """``<Connect><Stream>``: bridge the call to our WebSocket, passing ``parameters`` as ``<Parameter>``s.

    ``status_callback`` receives the stream's stream-started / stream-stopped / stream-error events.
    ``action`` is fetched when the stream ends (e.g. to transfer without REST credentials).
    ``redirect`` (an absolute URL) is where Twilio goes next when the stream closes without the call
    ending: ``<Redirect method="POST">`` back to the voice webhook resumes the call (scale/resume).
    ``allow_insecure`` also accepts ``ws://``, for local fakes only: real Twilio refuses it.
    Raises :class:`StreamUrlError` for a URL Twilio would refuse.
    """
    _check_stream_url(stream_url, allow_insecure=allow_insecure)
    stream = Stream(url=stream_url, status_callback=status_callback)
    for name, value in parameters.items():
        if not name:
            raise ValueError("a <Parameter> name must not be empty")
        stream.parameter(name=name, value=value)
    connect = Connect(action=action)
    connect.append(stream)
    response = VoiceResponse()
    response.append(connect)
    if redirect is not None:
        response.redirect(redirect, method="POST")
    return str(response)


def _say(response: VoiceResponse, text: str | None) -> None:
    if text:  # an empty <Say> is a Twilio warning, not silence
        response.say(text)


def dial_twiml(
    number: str,
    *,
    say: str | None = None,
    caller_id: str | None = None,
    timeout_s: int = 20,
    status_callback: str | None = None,
) -> str:
    """Optionally say something, then ``<Dial>`` ``number`` (E.164, or a ``sip:`` URI).

    With ``status_callback``, Twilio reports the dialed leg (initiated ... completed) there.
    """
    if not number.strip():
        raise ValueError("dial_twiml needs a number to dial, e.g. '+15551230003'")
    low, high = DIAL_TIMEOUT_RANGE_S
    if not low <= timeout_s <= high:
        raise ValueError(f"the <Dial> timeout must be {low} to {high} seconds, got {timeout_s}")
    response = VoiceResponse()
    _say(response, say)
    dial = Dial(caller_id=caller_id, timeout=timeout_s)
    events = STATUS_CALLBACK_EVENTS if status_callback else None
    if number.startswith("sip:"):
        dial.sip(number, status_callback=status_callback, status_callback_event=events)
    else:
        dial.number(number, status_callback=status_callback, status_callback_event=events)
    response.append(dial)
    return str(response)


def hangup_twiml(say: str | None = None) -> str:
    """Optionally say something, then hang up."""
    response = VoiceResponse()
    _say(response, say)
    response.hangup()
    return str(response)


def busy_twiml(message: str = BUSY_MESSAGE) -> str:
    """A polite refusal, for when the server is draining or at capacity: say ``message``, hang up."""
    return hangup_twiml(message)


def redirect_twiml(url: str) -> str:
    """Send the call to ``url`` (POST): an outbound call placed by ``voicefsm call`` joins the served flow."""
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)
