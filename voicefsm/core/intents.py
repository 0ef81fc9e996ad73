"""What a call asks of its far end, which carries it out on its own wire (a hang-up is its ``close``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Send 8 kHz mu-law audio to the caller."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class PlaceMark:
    """Ask the far end to echo ``name`` once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearBuffer:
    """Drop audio the far end has buffered but not yet played (barge-in)."""


OutboundItem = PlayAudio | PlaceMark | ClearBuffer
