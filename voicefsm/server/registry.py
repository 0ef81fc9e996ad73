"""Which calls are live, and the single-use tokens that tie a media stream to its signed webhook.

With a records database that workers share (PostgreSQL), the tickets live in it (``stream_tickets``,
only a hash of each token): the stream may reach any worker on the database, and using a ticket is
one atomic UPDATE, so exactly one stream is admitted however many workers see the token. Without
one (SQLite, which one process serves, or an app built bare in tests), they are kept in this
process's memory with the same rules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from voicefsm.core.events import CallStarted
from voicefsm.records import CallStore, utcnow
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


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CallRegistry:
    """Live calls by CallSid (one stream each) and the tokens minted for them by the voice webhook.

    ``store``: keep the tickets in the records database, shared by every worker on it.
    """

    def __init__(
        self,
        *,
        require_token: bool,
        clock: Callable[[], float] = time.monotonic,
        store: CallStore | None = None,
    ) -> None:
        self.require_token = require_token
        self._clock = clock
        self._store = store
        # Without a store: every ticket. (With one, the database keeps them, as hashes.)
        self._tickets: dict[str, _Ticket] = {}
        self.active: dict[str, Call] = {}
        self.idle = asyncio.Event()
        self.idle.set()

    async def issue_token(self, call_sid: str, caller: str | None) -> str:
        """A token for ``call_sid``'s stream.

        In memory, a retried webhook for the same call gets the same one. In the database, each
        webhook (a retry, or Twilio's redirect to resume the call, on any worker) gets a new one; the
        first used wins and voids the others, so a call still has one stream at a time.
        """
        if self._store is not None:
            token = secrets.token_urlsafe(18)
            expires_at = utcnow() + dt.timedelta(seconds=TOKEN_TTL_S)
            await self._store.add_ticket(call_sid, _hash(token), caller=caller, expires_at=expires_at)
            return token
        now = self._clock()
        self._tickets = {sid: t for sid, t in self._tickets.items() if t.expires_at > now}
        ticket = self._tickets.get(call_sid)
        if ticket is None:
            ticket = _Ticket(secrets.token_urlsafe(18), caller, now + TOKEN_TTL_S)
            self._tickets[call_sid] = ticket
        return ticket.token

    async def is_taken(self, call_sid: str) -> bool:
        """True when ``call_sid`` is live, has a record, or has a token waiting for its stream."""
        if call_sid in self.active:
            return True
        if self._store is not None:
            return await self._store.call_sid_taken(call_sid)
        ticket = self._tickets.get(call_sid)
        return ticket is not None and ticket.expires_at > self._clock()

    async def outstanding(self) -> int:
        """Tickets issued and not yet used or expired: calls answered whose stream has not started yet.

        With the database: this worker's tickets only (each worker counts its own lines).
        """
        if self._store is not None:
            return await self._store.waiting_tickets()  # this worker's: capacity is per process
        now = self._clock()
        return sum(1 for ticket in self._tickets.values() if ticket.expires_at > now)

    async def has_ticket(self, call_sid: str) -> bool:
        """True when the webhook answered ``call_sid`` and its stream has not started (nor expired)."""
        if self._store is not None:
            return await self._store.has_waiting_ticket(call_sid)
        ticket = self._tickets.get(call_sid)
        return ticket is not None and ticket.expires_at > self._clock()

    async def discard(self, call_sid: str) -> Admission | None:
        """Withdraw ``call_sid``'s unused ticket (its call ended before the stream); what it said, or None."""
        if self._store is not None:
            waiting, caller = await self._store.withdraw_tickets(call_sid)
            return Admission(call_sid, caller) if waiting else None
        ticket = self._tickets.pop(call_sid, None)
        if ticket is None or ticket.expires_at <= self._clock():
            return None
        return Admission(call_sid, ticket.caller)

    async def admit(self, started: CallStarted) -> Admission:
        """Check a started call against its token and the live calls (StreamRejected if not)."""
        call_sid = started.call_id
        if call_sid in self.active:
            raise StreamRejected(
                f"a stream for call {call_sid} is already running; the second one is refused"
            )
        token = started.parameters.get("token")
        if token is None:
            if self.require_token:
                raise StreamRejected(
                    f"stream for call {call_sid} carries no token; it did not come from our webhook"
                )
            return Admission(call_sid, started.caller)
        if self._store is not None:
            return await self._admit_shared(call_sid, token)
        ticket = self._tickets.get(call_sid)
        if ticket is None or ticket.expires_at <= self._clock():
            raise StreamRejected(f"stream for call {call_sid} carries an unknown, used or expired token")
        if not secrets.compare_digest(ticket.token, token):
            raise StreamRejected(f"stream for call {call_sid} carries a token minted for another call")
        del self._tickets[call_sid]
        return Admission(call_sid, ticket.caller)

    async def _admit_shared(self, call_sid: str, token: str) -> Admission:
        assert self._store is not None
        used = await self._store.use_ticket(call_sid, _hash(token))
        if not used.admitted:
            if used.other_call:
                raise StreamRejected(f"stream for call {call_sid} carries a token minted for another call")
            raise StreamRejected(f"stream for call {call_sid} carries an unknown, used or expired token")
        if call_sid in self.active:  # a second stream for the call won the same race on this worker
            raise StreamRejected(
                f"a stream for call {call_sid} is already running; the second one is refused"
            )
        return Admission(call_sid, used.caller)

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
