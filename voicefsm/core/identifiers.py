"""The shapes of Twilio's identifiers and of a stream's custom parameters, checked before any use.

A Twilio SID is a two-letter prefix and 32 hex digits (``CA`` a call, ``AC`` an account, ``MZ`` a
media stream, ``SM``/``MM`` a message). Anything else that claims to be one is refused before it
reaches a log line, a file name under the recordings folder, a database key or the call registry.

Custom stream parameters (``<Parameter>`` in the TwiML, ``start.customParameters`` on the stream)
are bounded in number, name and value length, and characters: names and values are printable text
(no control characters; a campaign's CSV columns such as ``first name`` become names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: ``CA`` + 32 hex digits: a call.
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
#: ``AC`` + 32 hex digits: an account.
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
#: ``MZ`` + 32 hex digits: a media stream.
STREAM_SID = re.compile(r"MZ[0-9a-fA-F]{32}")
#: ``SM``/``MM`` + 32 hex digits: a message (SMS or MMS).
MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")

SID_LENGTH = 34
MAX_PARAMETERS = 32
MAX_PARAMETER_NAME = 64
MAX_PARAMETER_VALUE = 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f]")

SHAPES = {
    "CallSid": (CALL_SID, "CA followed by 32 hex digits"),
    "AccountSid": (ACCOUNT_SID, "AC followed by 32 hex digits"),
    "StreamSid": (STREAM_SID, "MZ followed by 32 hex digits"),
    "MessageSid": (MESSAGE_SID, "SM or MM followed by 32 hex digits"),
}


class InvalidIdentifier(ValueError):
    """An identifier or parameter that does not have its documented shape; the message says which."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.field} {self.problem}"


def _shown(value: str) -> str:
    """A refused value as it may be quoted in an error: short and without control characters."""
    cleaned = _CONTROL.sub("?", value[:40])
    return repr(cleaned + ("..." if len(value) > 40 else ""))


def check_sid(field: str, value: str) -> str:
    """``value`` if it has the shape of Twilio's ``field`` (``CallSid``, ``AccountSid`` ...), else raise.

    Raises InvalidIdentifier naming the field and the expected shape (the value is quoted cut short).
    """
    pattern, shape = SHAPES[field]
    if len(value) != SID_LENGTH or pattern.fullmatch(value) is None:
        raise InvalidIdentifier(field, f"{_shown(value)} is not a Twilio {field} ({shape})")
    return value


def is_call_sid(value: str) -> bool:
    """Whether ``value`` looks like a Twilio CallSid (``CA`` + 32 hex digits)."""
    return len(value) == SID_LENGTH and CALL_SID.fullmatch(value) is not None


def check_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    """The custom stream parameters as a plain dict, if they are few, short and printable; else raise.

    At most 32 parameters; names of 1 to 64 characters, values of at most 1024, neither with control
    characters (a value may hold a tab or a newline). Raises InvalidIdentifier saying which rule broke.
    """
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidIdentifier(
            "customParameters", f"has {len(parameters)} entries; at most {MAX_PARAMETERS} are accepted"
        )
    checked: dict[str, str] = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_PARAMETER_NAME or _NAME_BAD.search(name):
            raise InvalidIdentifier(
                "customParameters",
                f"has a parameter named {_shown(str(name))}; names are 1 to {MAX_PARAMETER_NAME} printable "
                "characters",
            )
        if not isinstance(value, str):
            raise InvalidIdentifier("customParameters", f"parameter {name!r} is not text")
        if len(value) > MAX_PARAMETER_VALUE:
            raise InvalidIdentifier(
                "customParameters",
                f"parameter {name!r} is {len(value)} characters long; "
                f"at most {MAX_PARAMETER_VALUE} are accepted",
            )
        if _CONTROL.search(value):
            raise InvalidIdentifier("customParameters", f"parameter {name!r} contains control characters")
        checked[name] = value
    return checked
