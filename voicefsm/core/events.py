"""Call events as plain values, in no vendor's words.

Two groups. What a far end reports (:data:`FarEndEvent`): the call started, caller audio came
in, a playback mark was reached, a key was pressed, the far end hung up. Each far end (the
Twilio adapter, the browser phone through it, the in-process line) translates its wire into
these. What a call tells its listeners (:data:`CallEvent`): the flow runtime turns these into
chart events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

KEYPAD_DIGITS = frozenset("0123456789*#ABCD")
"""The keys a phone can send: ``0-9 * #`` and the rarely seen ``A-D``."""


# -- what a far end reports ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The far end answered: the call's id, who calls (when known) and the parameters it carries."""

    call_id: str
    caller: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioIn:
    """One frame of the caller's audio: 8 kHz mono mu-law."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class MarkReached:
    """The far end played everything queued before mark ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """A keypad digit: one of :data:`KEYPAD_DIGITS`."""

    digit: str


@dataclass(frozen=True, slots=True)
class FarEndHungUp:
    """The far end ended the call (or its stream); ``reason`` says how."""

    reason: str


FarEndEvent = CallStarted | AudioIn | MarkReached | KeyPressed | FarEndHungUp


# -- what a call tells its listeners ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarkReceived:
    """A mark was settled; ``interrupted`` is true when its audio was cleared rather than played."""

    name: str
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Committed:
    """A final transcript of one caller utterance; ``via="text"`` when it was typed, not said."""

    text: str
    via: Literal["speech", "text"] = "speech"


@dataclass(frozen=True, slots=True)
class Recognizing:
    """An interim hypothesis; it may still change."""

    text: str


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
    """The call is over: the caller hung up, the line was lost, or we hung up."""

    reason: str


@dataclass(frozen=True, slots=True)
class MachineDetected:
    """The carrier's answering-machine detection decided who answered (Twilio's async AMD).

    ``answered_by`` is the verdict as the carrier says it: ``human``, ``machine_start``,
    ``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``, ``fax`` or ``unknown``.
    """

    answered_by: str

    @property
    def machine(self) -> bool:
        """True for a verdict a flow acts on: a machine whose greeting has ended (the beep, or silence).

        ``machine_start`` (said before the greeting ends) misfires on people who pause, so it is not
        one; ``fax`` and ``unknown`` are not either.
        """
        return self.answered_by.startswith("machine_end_")


CallEvent = (
    CallStarted
    | MarkReceived
    | Committed
    | Recognizing
    | KeyPressed
    | SttError
    | TtsError
    | Disconnected
    | MachineDetected
)
