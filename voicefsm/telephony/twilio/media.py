"""Twilio Media Streams messages: parse every frame into a frozen value, build every frame as JSON text.

:func:`neutral_event` translates a parsed message into the call events of
:mod:`voicefsm.core.events`; nothing outside this package sees Twilio's message types.

Parsing is total. Whatever arrives (a binary frame, 1 MB of text, JSON that is not an object,
an unknown event, bad base64) comes back as a :class:`MalformedMessage` value rather than an
exception, so one bad frame can never end a call. Sizes are checked before JSON is parsed.

Twilio writes every number inside ``media`` and every ``sequenceNumber`` as a string; both
strings of digits and JSON integers are accepted. Unknown extra fields are ignored.
"""

from __future__ import annotations

import binascii
import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import Any, Final, TypeVar

from pydantic_core import from_json

from voicefsm.core.events import (
    KEYPAD_DIGITS,
    AudioIn,
    CallStarted,
    FarEndEvent,
    FarEndHungUp,
    KeyPressed,
    MarkReached,
)

MAX_MESSAGE_BYTES: Final = 65536
"""Frames larger than this (UTF-8 bytes) are refused unparsed; real Twilio frames are a few hundred bytes."""

PLACEHOLDER_ACCOUNT_SID: Final = "AC" + "0" * 32
EXCERPT_CHARS: Final = 80

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_Parsed = TypeVar("_Parsed")


# -- inbound messages (Twilio -> server) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The WebSocket is up; ``start`` follows."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """How ``media`` payloads are encoded (always 8 kHz mono mu-law today)."""

    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Start:
    """The stream started: its sids, tracks, format and the TwiML ``<Parameter>`` pairs."""

    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str] = field(hash=False)
    media_format: MediaFormat

    def __post_init__(self) -> None:
        # A read-only view over a private copy: the value stays frozen even if the caller's dict changes.
        object.__setattr__(self, "custom_parameters", MappingProxyType(dict(self.custom_parameters)))


@dataclass(frozen=True, slots=True)
class Media:
    """One chunk of caller audio; ``payload`` is the decoded mu-law bytes (normally 160 = 20 ms)."""

    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key (Twilio names the track ``inbound_track`` here)."""

    stream_sid: str
    track: str
    digit: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio echoed a mark we sent: the audio before it played, or was cleared."""

    stream_sid: str
    name: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream ended: the caller hung up, or the call was redirected (not necessarily a hang-up)."""

    stream_sid: str
    account_sid: str
    call_sid: str
    sequence_number: int | None = None


InboundMessage = Connected | Start | Media | Dtmf | Mark | Stop

#: A ``media`` message as :func:`parse_inbound` gives it: (sequence number, decoded mu-law audio).
MediaAudio = tuple[int, bytes]


def neutral_event(message: InboundMessage) -> FarEndEvent | None:
    """The call event a Twilio message means; None for ``connected`` (only ``start`` opens a call).

    ``start`` keeps every ``<Parameter>`` (the server's stream token among them); the caller is
    the ``caller`` or ``callerNumber`` parameter when one is set. ``stop`` is not necessarily a
    hang-up: Twilio also stops the stream when the call is redirected.
    """
    if isinstance(message, Media):
        return AudioIn(message.payload)
    if isinstance(message, Mark):
        return MarkReached(message.name)
    if isinstance(message, Dtmf):
        return KeyPressed(message.digit)
    if isinstance(message, Start):
        parameters = dict(message.custom_parameters)
        return CallStarted(
            message.call_sid, parameters.get("caller") or parameters.get("callerNumber"), parameters
        )
    if isinstance(message, Stop):
        return FarEndHungUp("stream stopped")
    return None


# -- outbound messages (server -> Twilio), as a fake Twilio or the browser phone sees them --------


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """Audio for Twilio to queue and play."""

    payload: bytes
    stream_sid: str = ""


@dataclass(frozen=True, slots=True)
class OutboundMark:
    """Echo ``name`` once the audio queued before it has played."""

    name: str
    stream_sid: str = ""


@dataclass(frozen=True, slots=True)
class OutboundClear:
    """Drop all queued audio (and echo the pending marks)."""

    stream_sid: str = ""


OutboundMessage = OutboundMedia | OutboundMark | OutboundClear


# -- malformed input ------------------------------------------------------------------------------


class MalformedKind(enum.Enum):
    """Why a frame was dropped."""

    NOT_TEXT = "not_text"
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_EVENT = "missing_event"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_FIELDS = "invalid_fields"
    BAD_BASE64 = "bad_base64"
    BEFORE_START = "before_start"
    BAD_DIGIT = "bad_digit"


_TEMPLATES: Final = {
    MalformedKind.NOT_TEXT: "dropped a binary frame ({detail}); Media Streams messages are JSON text frames",
    MalformedKind.TOO_LARGE: "dropped an oversized frame ({detail}); the limit is {limit} bytes",
    MalformedKind.NOT_JSON: "dropped a frame that is not valid JSON ({detail})",
    MalformedKind.NOT_OBJECT: "dropped a frame that is JSON but not an object ({detail})",
    MalformedKind.MISSING_EVENT: 'dropped a message without a string "event" field ({detail})',
    MalformedKind.UNKNOWN_EVENT: "ignored a message with an unknown event ({detail})",
    MalformedKind.INVALID_FIELDS: "dropped {a_message} with invalid fields ({detail})",
    MalformedKind.BAD_BASE64: "dropped {a_message} with invalid base64 payload ({detail})",
    MalformedKind.BEFORE_START: "dropped {a_message} that arrived before start ({detail})",
    MalformedKind.BAD_DIGIT: "dropped {a_message} with an invalid digit ({detail})",
}


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A frame that was dropped: why (``kind``, ``detail``), and a log-safe ``excerpt`` of it.

    The excerpt is the frame's first 80 characters with control characters escaped and any
    ``payload`` or ``token`` value blanked, so it can be logged without dumping audio or secrets.
    """

    kind: MalformedKind
    detail: str
    excerpt: str
    event: str | None = None

    def __str__(self) -> str:
        a_message = f"a {self.event} message" if self.event else "a message"
        return _TEMPLATES[self.kind].format(detail=self.detail, a_message=a_message, limit=MAX_MESSAGE_BYTES)


class _Invalid(Exception):
    """Internal: a field check failed. Never escapes this module."""

    def __init__(self, kind: MalformedKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


_SECRET_VALUE = re.compile(r'("(?:payload|token)"\s*:\s*")[^"]*')


def _excerpt(frame: str | bytes | bytearray | memoryview) -> str:
    head = frame[:EXCERPT_CHARS] if isinstance(frame, str) else bytes(frame[:EXCERPT_CHARS]).decode("latin-1")
    # unicode_escape turns newlines and other control characters into visible escapes (no log injection).
    safe = head.encode("unicode_escape").decode("ascii")
    return _SECRET_VALUE.sub(r"\1…", safe)[:EXCERPT_CHARS]


def _malformed(
    kind: MalformedKind, detail: str, frame: str | bytes | bytearray | memoryview, event: str | None = None
) -> MalformedMessage:
    return MalformedMessage(kind, detail, _excerpt(frame), event)


# -- field readers --------------------------------------------------------------------------------


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object(data: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = data.get(key)
    if type(value) is not dict:
        if value is None:
            raise _Invalid(MalformedKind.INVALID_FIELDS, f"{where}{key} is missing")
        detail = f"{where}{key} must be an object, got {_describe(value)}"
        raise _Invalid(MalformedKind.INVALID_FIELDS, detail)
    return value


def _str(data: dict[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if type(value) is not str:
        if value is None:
            raise _Invalid(MalformedKind.INVALID_FIELDS, f"{where}{key} is missing")
        raise _Invalid(MalformedKind.INVALID_FIELDS, f"{where}{key} must be a string, got {_describe(value)}")
    return value


def _int(data: dict[str, Any], key: str, where: str = "") -> int:
    """A non-negative whole number, written as a JSON integer or (as Twilio does) a string of digits."""
    value = data.get(key)
    if type(value) is str and value.isascii() and value.isdigit():
        try:
            return int(value)
        except ValueError:  # more digits than int() converts
            pass
    elif type(value) is int and value >= 0:
        return value
    if value is None:
        raise _Invalid(MalformedKind.INVALID_FIELDS, f"{where}{key} is missing")
    raise _Invalid(
        MalformedKind.INVALID_FIELDS, f"{where}{key} must be a whole number, got {_describe(value)}"
    )


def _optional_int(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _payload(data: dict[str, Any], where: str) -> bytes:
    encoded = _str(data, "payload", where)
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise _Invalid(MalformedKind.BAD_BASE64, str(exc)) from None


def _custom_parameters(start: dict[str, Any]) -> Mapping[str, str]:
    value = start.get("customParameters")
    if value is None:
        return _EMPTY
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        detail = f"start.customParameters must map names to strings, got {_describe(value)}"
        raise _Invalid(MalformedKind.INVALID_FIELDS, detail)
    return value


def _tracks(start: dict[str, Any]) -> tuple[str, ...]:
    value = start.get("tracks")
    if type(value) is not list or not all(type(track) is str for track in value):
        detail = "is missing" if value is None else f"must be a list of strings, got {_describe(value)}"
        raise _Invalid(MalformedKind.INVALID_FIELDS, f"start.tracks {detail}")
    return tuple(value)


# -- inbound parsers, one per event ---------------------------------------------------------------


def _parse_connected(data: dict[str, Any]) -> Connected:
    return Connected(_str(data, "protocol"), _str(data, "version"))


def _parse_start(data: dict[str, Any]) -> Start:
    start = _object(data, "start")
    media_format = _object(start, "mediaFormat", "start.")
    stream_sid = data.get("streamSid")
    return Start(
        sequence_number=_int(data, "sequenceNumber"),
        stream_sid=stream_sid if type(stream_sid) is str else _str(start, "streamSid", "start."),
        account_sid=_str(start, "accountSid", "start."),
        call_sid=_str(start, "callSid", "start."),
        tracks=_tracks(start),
        custom_parameters=_custom_parameters(start),
        media_format=MediaFormat(
            _str(media_format, "encoding", "start.mediaFormat."),
            _int(media_format, "sampleRate", "start.mediaFormat."),
            _int(media_format, "channels", "start.mediaFormat."),
        ),
    )


def _parse_media(data: dict[str, Any]) -> Media:
    media = _object(data, "media")
    return Media(
        _int(data, "sequenceNumber"),
        _str(data, "streamSid"),
        _str(media, "track", "media."),
        _int(media, "chunk", "media."),
        _int(media, "timestamp", "media."),
        _payload(media, "media."),
    )


def _media_audio(data: dict[str, Any]) -> MediaAudio:
    """What :func:`_parse_media` checks, for 50 frames a second: a valid frame is read without the
    field readers and without building a :class:`Media`; anything else goes through
    :func:`_parse_media`, so it fails exactly as there."""
    media = data.get("media")
    if type(media) is dict and type(data.get("streamSid")) is str and type(media.get("track")) is str:
        sequence: Any = data.get("sequenceNumber")
        chunk: Any = media.get("chunk")
        timestamp: Any = media.get("timestamp")
        payload = media.get("payload")
        if type(payload) is str and _is_count(sequence) and _is_count(chunk) and _is_count(timestamp):
            try:
                int(chunk), int(timestamp)  # as _int does: a number too long for int() is refused
                return int(sequence), binascii.a2b_base64(payload, strict_mode=True)
            except ValueError:  # that, or bad base64: said as _parse_media says it
                pass
    message = _parse_media(data)
    return message.sequence_number, message.payload


def _is_count(value: object) -> bool:
    """Of the form :func:`_int` accepts (a string of digits may still be too long for int())."""
    if type(value) is str:
        return value.isascii() and value.isdigit()
    return type(value) is int and value >= 0


def _parse_dtmf(data: dict[str, Any]) -> Dtmf:
    dtmf = _object(data, "dtmf")
    digit = _str(dtmf, "digit", "dtmf.")
    if digit not in KEYPAD_DIGITS:
        raise _Invalid(MalformedKind.BAD_DIGIT, f"{_describe(digit)}; keys are 0-9, *, # and A-D")
    track = _str(dtmf, "track", "dtmf.")
    return Dtmf(_str(data, "streamSid"), track, digit, _optional_int(data, "sequenceNumber"))


def _parse_mark(data: dict[str, Any]) -> Mark:
    mark = _object(data, "mark")
    return Mark(_str(data, "streamSid"), _str(mark, "name", "mark."), _optional_int(data, "sequenceNumber"))


def _parse_stop(data: dict[str, Any]) -> Stop:
    stop = _object(data, "stop")
    return Stop(
        _str(data, "streamSid"),
        _str(stop, "accountSid", "stop."),
        _str(stop, "callSid", "stop."),
        _optional_int(data, "sequenceNumber"),
    )


_INBOUND: Final[dict[str, Callable[[dict[str, Any]], InboundMessage]]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}
_NEEDS_START: Final = frozenset({"media", "dtmf", "mark"})
#: The same, with ``media`` read by :func:`_media_audio` (see :func:`parse_inbound`).
_INBOUND_AUDIO: Final[dict[str, Callable[[dict[str, Any]], InboundMessage | MediaAudio]]] = {
    **_INBOUND,
    "media": _media_audio,
}


def _parse_outbound_media(data: dict[str, Any]) -> OutboundMedia:
    return OutboundMedia(_payload(_object(data, "media"), "media."), _str(data, "streamSid"))


def _parse_outbound_mark(data: dict[str, Any]) -> OutboundMark:
    return OutboundMark(_str(_object(data, "mark"), "name", "mark."), _str(data, "streamSid"))


def _parse_outbound_clear(data: dict[str, Any]) -> OutboundClear:
    return OutboundClear(_str(data, "streamSid"))


_OUTBOUND: Final[dict[str, Callable[[dict[str, Any]], OutboundMessage]]] = {
    "media": _parse_outbound_media,
    "mark": _parse_outbound_mark,
    "clear": _parse_outbound_clear,
}

# A str of n characters is at most 4n UTF-8 bytes: below this length it cannot be too large.
_SURELY_SMALL_CHARS: Final = MAX_MESSAGE_BYTES // 4


def _load(frame: str | bytes) -> tuple[dict[str, Any], str] | MalformedMessage:
    """The frame's JSON object and its event name, or why there are none."""
    if not isinstance(frame, str):
        return _malformed(MalformedKind.NOT_TEXT, f"{len(frame)} bytes", frame)
    if len(frame) > _SURELY_SMALL_CHARS:
        size = len(frame) if len(frame) > MAX_MESSAGE_BYTES else len(frame.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            return _malformed(MalformedKind.TOO_LARGE, f"at least {size} bytes", frame)
    try:
        # pydantic-core's JSON parser is about 3x faster than json.loads on a media frame, and caps nesting.
        data = from_json(frame)
    except (ValueError, TypeError) as exc:  # TypeError: a str holding lone surrogates cannot be UTF-8
        return _malformed(MalformedKind.NOT_JSON, str(exc) or type(exc).__name__, frame)
    if type(data) is not dict:
        return _malformed(MalformedKind.NOT_OBJECT, f"got a {type(data).__name__}", frame)
    event = data.get("event")
    if type(event) is not str:
        detail = "it is missing" if event is None else f"got {_describe(event)}"
        return _malformed(MalformedKind.MISSING_EVENT, detail, frame)
    return data, event


def parse_message(frame: str | bytes, *, started: bool = True) -> InboundMessage | MalformedMessage:
    """Parse one frame Twilio sent. Never raises: bad input comes back as a MalformedMessage.

    ``started=False`` means no ``start`` has arrived yet, so ``media``, ``dtmf`` and ``mark`` are
    refused (BEFORE_START) rather than delivered to a call that does not exist.
    """
    return _parse_inbound(frame, started, _INBOUND)


def parse_inbound(
    frame: str | bytes, *, started: bool = True
) -> InboundMessage | MediaAudio | MalformedMessage:
    """:func:`parse_message`, but a ``media`` message comes back as its :data:`MediaAudio`.

    The same checks and the same MalformedMessage for every bad frame; a media stream reads 50 of
    these a second per call, and the :class:`Media` value would be thrown away at once.
    """
    return _parse_inbound(frame, started, _INBOUND_AUDIO)


def _parse_inbound(
    frame: str | bytes, started: bool, parsers: Mapping[str, Callable[[dict[str, Any]], _Parsed]]
) -> _Parsed | MalformedMessage:
    loaded = _load(frame)
    if isinstance(loaded, MalformedMessage):
        return loaded
    data, event = loaded
    parser = parsers.get(event)
    if parser is None:
        return _malformed(MalformedKind.UNKNOWN_EVENT, _describe(event), frame)
    if not started and event in _NEEDS_START:
        return _malformed(MalformedKind.BEFORE_START, "no start message yet", frame, event)
    try:
        return parser(data)
    except _Invalid as exc:
        return _malformed(exc.kind, exc.detail, frame, event)


def parse_outbound(frame: str | bytes) -> OutboundMessage | MalformedMessage:
    """Parse one frame the server sent to Twilio (media, mark or clear). Never raises."""
    loaded = _load(frame)
    if isinstance(loaded, MalformedMessage):
        return loaded
    data, event = loaded
    parser = _OUTBOUND.get(event)
    if parser is None:
        return _malformed(MalformedKind.UNKNOWN_EVENT, _describe(event), frame)
    try:
        return parser(data)
    except _Invalid as exc:
        return _malformed(exc.kind, exc.detail, frame, event)


# -- builders -------------------------------------------------------------------------------------

_quote: Final[Callable[[str], str]] = encode_basestring_ascii  # a JSON string literal; 3x faster than dumps


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def media_message(stream_sid: str, ulaw: bytes) -> str:
    """Outbound audio: raw 8 kHz mono mu-law (no WAV header), any length."""
    return f'{{"event":"media","streamSid":{_quote(stream_sid)},"media":{{"payload":"{_b64(ulaw)}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    """Outbound mark: Twilio echoes ``name`` once the audio queued before it has played."""
    return f'{{"event":"mark","streamSid":{_quote(stream_sid)},"mark":{{"name":{_quote(name)}}}}}'


def clear_message(stream_sid: str) -> str:
    """Outbound clear: Twilio drops its queued audio and echoes the pending marks."""
    return f'{{"event":"clear","streamSid":{_quote(stream_sid)}}}'


def _dumps(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


def connected_message(protocol: str = "Call", version: str = "1.0.0") -> str:
    """Inbound ``connected``, the first frame Twilio sends."""
    return _dumps({"event": "connected", "protocol": protocol, "version": version})


def start_message(
    stream_sid: str,
    call_sid: str,
    account_sid: str = PLACEHOLDER_ACCOUNT_SID,
    custom_parameters: Mapping[str, str] | None = None,
    tracks: tuple[str, ...] = ("inbound",),
    sequence_number: int = 1,
) -> str:
    """Inbound ``start``, as Twilio sends it for ``<Connect><Stream>``."""
    return _dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": dict(custom_parameters or {}),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def inbound_media_message(
    stream_sid: str,
    ulaw: bytes,
    *,
    chunk: int,
    timestamp_ms: int,
    sequence_number: int,
    track: str = "inbound",
) -> str:
    """Inbound ``media``: caller audio with Twilio's string-typed counters."""
    return (
        f'{{"event":"media","sequenceNumber":"{sequence_number:d}","streamSid":{_quote(stream_sid)},'
        f'"media":{{"track":{_quote(track)},"chunk":"{chunk:d}","timestamp":"{timestamp_ms:d}",'
        f'"payload":"{_b64(ulaw)}"}}}}'
    )


def dtmf_message(stream_sid: str, digit: str, *, sequence_number: int, track: str = "inbound_track") -> str:
    """Inbound ``dtmf``: one key press."""
    return _dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "dtmf": {"track": track, "digit": digit},
        }
    )


def mark_echo_message(stream_sid: str, name: str, *, sequence_number: int) -> str:
    """Inbound ``mark``: Twilio's echo of a mark the server sent."""
    return _dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop_message(
    stream_sid: str, call_sid: str, account_sid: str = PLACEHOLDER_ACCOUNT_SID, *, sequence_number: int
) -> str:
    """Inbound ``stop``: the stream ended (hang-up or redirect)."""
    return _dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
