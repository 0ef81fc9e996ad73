"""The seam between a wire protocol and a call.

A transport turns a connection into the Media Streams messages of
:mod:`voicefsm.core.twilio_media` (Twilio, the browser phone and the bridge all speak
that protocol) and carries out what the call asks of it.
"""

from __future__ import annotations

from typing import Protocol

from voicefsm.core.intents import OutboundItem
from voicefsm.core.twilio_media import InboundMessage


class TransportClosed(Exception):
    """The connection is gone; nothing more can be sent or received."""


class MediaTransport(Protocol):
    """One media connection. ``receive`` never raises for bad input: it drops it and reads on."""

    async def receive(self) -> InboundMessage | None:
        """The next well-formed message, or None once the connection has closed."""
        ...

    async def send(self, item: OutboundItem) -> None:
        """Send audio, a mark or a clear. Raises TransportClosed when the connection is gone."""
        ...

    async def close(self, reason: str) -> None:
        """Close the connection (ending the call); idempotent and never raises."""
        ...
