"""What a flow can ask the phone network to do beyond the media stream.

The Twilio REST client (``voicefsm.telephony``) implements this; tests and ``voicefsm chat``
use :class:`voicefsm.telephony.recording.RecordingActions`, which only writes them down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """A call placed by :meth:`TelephonyActions.place_call`."""

    call_sid: str
    status: str


@runtime_checkable
class TelephonyActions(Protocol):
    """Call control and messaging. Every method has a deadline and raises ``TelephonyError``."""

    async def place_call(
        self,
        to: str,
        twiml: str,
        *,
        status_callback: str | None = None,
        machine_detection: bool = False,
    ) -> OutboundCall:
        """Dial ``to`` and run ``twiml`` when answered."""
        ...

    async def transfer(self, call_sid: str, number: str, *, say: str | None = None) -> None:
        """Move a live call to ``number`` (the media stream stops; the call goes on)."""
        ...

    async def hangup(self, call_sid: str) -> None:
        """End the call. At most once per call; a call that has already ended is not an error."""
        ...

    async def send_sms(self, to: str, body: str) -> str:
        """Send a text message; returns its sid."""
        ...
