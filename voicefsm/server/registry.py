"""Which calls are live, and the single-use tokens that tie a media stream to its signed webhook."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from voicefsm.core.events import CallStarted
from voicefsm.runtime.call import Call

TOKEN_TTL_S = 120.0


@dataclass(slots=True)
class _Ticket:
    token: str
    caller: str | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class Admission:
    """A stream that may run: what the signed webhook told us about its call."""

    call_sid: str
    caller: str | None


class StreamRejected(Exception):
    """A media stream may not run; the message says why (and is safe to log)."""


class CallRegistry:
    """Live calls by CallSid (one stream each) and the tokens minted for them by the voice webhook."""

    def __init__(self, *, require_token: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.require_token = require_token
        self._clock = clock
        self._tickets: dict[str, _Ticket] = {}
        self.active: dict[str, Call] = {}
        self.idle = asyncio.Event()
        self.idle.set()

    def issue_token(self, call_sid: str, caller: str | None) -> str:
        """A token for ``call_sid``'s stream; a retried webhook for the same call gets the same one."""
        now = self._clock()
        self._tickets = {sid: t for sid, t in self._tickets.items() if t.expires_at > now}
        ticket = self._tickets.get(call_sid)
        if ticket is None:
            ticket = _Ticket(secrets.token_urlsafe(18), caller, now + TOKEN_TTL_S)
            self._tickets[call_sid] = ticket
        return ticket.token

    def is_taken(self, call_sid: str) -> bool:
        """True when ``call_sid`` is live or has a token waiting for its stream (a webhook ran for it)."""
        ticket = self._tickets.get(call_sid)
        return call_sid in self.active or (ticket is not None and ticket.expires_at > self._clock())

    async def outstanding(self) -> int:
        """Tickets issued and not yet used or expired: calls answered whose stream has not started yet.

        (Async like the other ticket methods, so the ticket store may move into the database.)
        """
        now = self._clock()
        return sum(1 for ticket in self._tickets.values() if ticket.expires_at > now)

    async def has_ticket(self, call_sid: str) -> bool:
        """True when the webhook answered ``call_sid`` and its stream has not started (nor expired)."""
        ticket = self._tickets.get(call_sid)
        return ticket is not None and ticket.expires_at > self._clock()

    async def discard(self, call_sid: str) -> Admission | None:
        """Withdraw ``call_sid``'s unused ticket (its call ended before the stream); what it said, or None."""
        ticket = self._tickets.pop(call_sid, None)
        if ticket is None or ticket.expires_at <= self._clock():
            return None
        return Admission(call_sid, ticket.caller)

    def admit(self, started: CallStarted) -> Admission:
        """Check a started call against its token and the live calls (StreamRejected if not)."""
        call_sid = started.call_id
        if call_sid in self.active:
            raise StreamRejected(
                f"a stream for call {call_sid} is already running; the second one is refused"
            )
        token = started.parameters.get("token")
        ticket = self._tickets.get(call_sid)
        if token is None:
            if self.require_token:
                raise StreamRejected(
                    f"stream for call {call_sid} carries no token; it did not come from our webhook"
                )
            return Admission(call_sid, started.caller)
        if ticket is None or ticket.expires_at <= self._clock():
            raise StreamRejected(f"stream for call {call_sid} carries an unknown, used or expired token")
        if not secrets.compare_digest(ticket.token, token):
            raise StreamRejected(f"stream for call {call_sid} carries a token minted for another call")
        del self._tickets[call_sid]
        return Admission(call_sid, ticket.caller)

    def add(self, call: Call) -> None:
        """Register a running call under its CallSid."""
        self.active[call.call_sid] = call
        self.idle.clear()

    def remove(self, call: Call) -> None:
        """Forget a call that has ended."""
        if self.active.get(call.call_sid) is call:
            del self.active[call.call_sid]
        if not self.active:
            self.idle.set()
