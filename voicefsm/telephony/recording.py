"""TelephonyActions that only writes down what was asked: for tests and ``voicefsm chat``.

Hangup follows exactly the rules of :class:`~voicefsm.telephony.twilio.rest.TwilioRest`: at most
once per call, a no-op after a transfer, an (injected) HTTP 404 counts as "already ended", and a
failed attempt may be retried. Failures are injected per action with :meth:`RecordingActions.fail_next`.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import Literal, TypeVar

from voicefsm.core.actions import OutboundCall
from voicefsm.errors import TelephonyError
from voicefsm.telephony.twilio.rest import HangupLedger, check_twiml

ActionName = Literal["place_call", "transfer", "hangup", "send_sms"]


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """``place_call`` succeeded and was given ``call_sid``."""

    to: str
    twiml: str
    status_callback: str | None
    machine_detection: bool
    call_sid: str


@dataclass(frozen=True, slots=True)
class Transferred:
    """``transfer`` succeeded."""

    call_sid: str
    number: str
    say: str | None = None


@dataclass(frozen=True, slots=True)
class HungUp:
    """``hangup`` sent its one request; ``already_ended`` when the answer was a 404."""

    call_sid: str
    already_ended: bool = False


@dataclass(frozen=True, slots=True)
class SmsSent:
    """``send_sms`` succeeded and was given ``sid``."""

    to: str
    body: str
    sid: str


@dataclass(frozen=True, slots=True)
class Failed:
    """An action raised ``error`` (injected with :meth:`RecordingActions.fail_next`)."""

    action: ActionName
    error: Exception


TelephonyRecord = PlacedCall | Transferred | HungUp | SmsSent | Failed
R = TypeVar("R", PlacedCall, Transferred, HungUp, SmsSent, Failed)


class RecordingActions:
    """Records every action in :attr:`records`, in order; hands out deterministic ``CA…``/``SM…`` sids."""

    def __init__(self) -> None:
        self.records: list[TelephonyRecord] = []
        self._faults: dict[str, collections.deque[Exception]] = collections.defaultdict(collections.deque)
        self._ids = itertools.count(1)
        self._hangups = HangupLedger()

    def fail_next(self, action: ActionName, error: Exception | None = None, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``action`` raise ``error`` (default: TelephonyError, HTTP 500)."""
        if action not in ("place_call", "transfer", "hangup", "send_sms"):
            raise ValueError(f"unknown action {action!r}; expected place_call, transfer, hangup or send_sms")
        for _ in range(times):
            fault = error or TelephonyError(action, "injected by RecordingActions.fail_next", status=500)
            self._faults[action].append(fault)

    def of_type(self, kind: type[R]) -> list[R]:
        """The records of one kind, e.g. ``actions.of_type(HungUp)``."""
        return [record for record in self.records if isinstance(record, kind)]

    async def place_call(
        self,
        to: str,
        twiml: str,
        *,
        status_callback: str | None = None,
        machine_detection: bool = False,
    ) -> OutboundCall:
        """Record the call and return a fresh call sid with status ``queued``."""
        check_twiml("place_call", twiml)
        self._raise_injected("place_call")
        call_sid = f"CA{next(self._ids):032x}"
        self.records.append(PlacedCall(to, twiml, status_callback, machine_detection, call_sid))
        return OutboundCall(call_sid=call_sid, status="queued")

    async def transfer(self, call_sid: str, number: str, *, say: str | None = None) -> None:
        """Record the transfer; a later hangup of this call is then a no-op, as with Twilio."""
        if not number:
            raise TelephonyError("transfer", "no number to transfer the call to")
        self._raise_injected("transfer")
        self._hangups.mark_transferred(call_sid)
        self.records.append(Transferred(call_sid, number, say))

    async def hangup(self, call_sid: str) -> None:
        """Record one hangup per call; repeats (and hangups after a transfer) record nothing."""
        already_ended = False

        async def send() -> None:
            nonlocal already_ended
            error = self._take_fault("hangup")
            if error is None:
                return
            if isinstance(error, TelephonyError) and error.status == 404:
                already_ended = True  # the ledger tolerates it, like Twilio's answer for an ended call
            else:
                self.records.append(Failed("hangup", error))
            raise error

        if await self._hangups.hangup(call_sid, send):
            self.records.append(HungUp(call_sid, already_ended=already_ended))

    async def send_sms(self, to: str, body: str) -> str:
        """Record the message and return a fresh message sid."""
        if not body:
            raise TelephonyError("send_sms", "the message body is empty")
        self._raise_injected("send_sms")
        sid = f"SM{next(self._ids):032x}"
        self.records.append(SmsSent(to, body, sid))
        return sid

    def _take_fault(self, action: ActionName) -> Exception | None:
        faults = self._faults[action]
        return faults.popleft() if faults else None

    def _raise_injected(self, action: ActionName) -> None:
        error = self._take_fault(action)
        if error is not None:
            self.records.append(Failed(action, error))
            raise error
