"""Twilio's asynchronous answering-machine detection, handed to the call it is about.

A call placed with ``MachineDetection=DetectMessageEnd`` and ``AsyncAmd=true`` (campaigns, and
``voicefsm call --amd``) runs its TwiML at once; Twilio POSTs the verdict (``AnsweredBy``) to the
``AsyncAmdStatusCallback`` a few seconds later, while the media stream is already running. Both
callback routes (``/twilio/status`` and ``/twilio/campaign/{attempt}``) pass the form here: the verdict
goes to the live call with that ``CallSid`` as a :class:`~voicefsm.core.events.MachineDetected`
event, which the flow runtime records (an ``amd`` row) and, for a machine whose greeting has ended,
sends to the flow as ``machine_answered`` when the flow has a transition on it.

The call must be running in this process: with several workers, the verdict reaches the call only
when the load balancer sends the callback to the worker that holds the stream (a campaign's outcome
is right either way: it is read from the callback, on any worker).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from voicefsm.core.events import MachineDetected
from voicefsm.server.registry import CallRegistry

log = logging.getLogger(__name__)

#: Twilio's verdicts are short lowercase words (human, machine_end_beep, fax, unknown...).
VERDICT = re.compile(r"^[a-z_]{1,32}$")


def deliver_verdict(registry: CallRegistry, fields: Mapping[str, str]) -> bool:
    """Hand the form's ``AnsweredBy`` to the live call named by its ``CallSid``; True when one took it."""
    answered_by = fields.get("AnsweredBy")
    call_sid = fields.get("CallSid")
    if not answered_by or not call_sid:
        return False
    if not VERDICT.match(answered_by):
        log.warning("ignored an answering-machine verdict that is not one of Twilio's words")
        return False
    call = registry.active.get(call_sid)
    if call is None:
        log.info("answering-machine verdict %s for call %s, which is not live here", answered_by, call_sid)
        return False
    call.emit(MachineDetected(answered_by))
    return True
