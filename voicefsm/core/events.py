"""Call events: what happened on the line, as plain values. The flow runtime turns them into chart events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

CallSid = NewType("CallSid", str)
StreamSid = NewType("StreamSid", str)


@dataclass(frozen=True, slots=True)
class WsConnected:
    """The media stream started."""

    call_sid: str
    stream_sid: str
    caller: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MarkReceived:
    """A mark was echoed; ``interrupted`` is true when its audio was cleared rather than played."""

    name: str
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Committed:
    """A final transcript of one caller utterance."""

    text: str


@dataclass(frozen=True, slots=True)
class Recognizing:
    """An interim hypothesis; it may still change."""

    text: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A keypad digit: one of ``0-9 * # A-D``."""

    digit: str


@dataclass(frozen=True, slots=True)
class SttError:
    """Speech recognition failed for good."""

    reason: str


@dataclass(frozen=True, slots=True)
class TtsError:
    """Speech synthesis or playback failed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The call is over: the caller hung up, the socket was lost, or we hung up."""

    reason: str


CallEvent = WsConnected | MarkReceived | Committed | Recognizing | Dtmf | SttError | TtsError | Disconnected

DTMF_DIGITS = frozenset("0123456789*#ABCD")
