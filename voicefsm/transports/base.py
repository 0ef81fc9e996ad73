"""The seam between a wire and a call: a far end speaks the neutral events of :mod:`voicefsm.core.events`.

A far end turns its wire into :data:`~voicefsm.core.events.FarEndEvent` values and carries
out the call's intents (:data:`~voicefsm.core.intents.OutboundItem`). The Twilio adapter
(``voicefsm.telephony.twilio``, which the browser phone speaks too) and the in-process line
(:mod:`voicefsm.transports.memory`) are the two there are; ``run_call`` drives either.
"""

from __future__ import annotations

from typing import Protocol

from voicefsm.core.events import FarEndEvent
from voicefsm.core.intents import OutboundItem
from voicefsm.errors import TransportClosed

__all__ = ["FarEnd", "TransportClosed"]


class FarEnd(Protocol):
    """One call's far end. ``receive`` never raises for bad input: it drops it and reads on.

    ``echoes_marks`` says whether the far end reports :class:`~voicefsm.core.events.MarkReached`
    itself once the audio before a mark has played (a phone does); when it does not, the driver
    confirms marks from a playout clock.
    """

    @property
    def echoes_marks(self) -> bool: ...

    async def receive(self) -> FarEndEvent | None:
        """The next event, or None once the far end has gone."""
        ...

    async def send(self, item: OutboundItem) -> None:
        """Send audio, a mark or a clear. Raises TransportClosed when the far end is gone."""
        ...

    async def close(self, reason: str) -> None:
        """Hang up (idempotent, never raises)."""
        ...
