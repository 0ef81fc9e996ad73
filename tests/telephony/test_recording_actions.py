"""RecordingActions: what a flow asked for, in order, with the same hangup rules as TwilioRest."""

from __future__ import annotations

import asyncio

import pytest

from voicefsm.core.actions import OutboundCall, TelephonyActions
from voicefsm.errors import TelephonyError
from voicefsm.telephony.recording import (
    Failed,
    HungUp,
    PlacedCall,
    RecordingActions,
    SmsSent,
    Transferred,
)

TO = "+15551230001"
AGENT = "+15551230003"
TWIML = "<Response><Hangup/></Response>"
CALL_SID = "CA" + "a" * 32


def test_it_is_telephony_actions() -> None:
    assert isinstance(RecordingActions(), TelephonyActions)


async def test_every_action_is_recorded_in_order_with_distinct_sids() -> None:
    actions = RecordingActions()

    call = await actions.place_call(
        TO, TWIML, status_callback="https://x.test/status", machine_detection=True
    )
    await actions.transfer(call.call_sid, AGENT, say="One moment.")
    sms = await actions.send_sms(TO, "Booked for Friday")
    await actions.hangup(CALL_SID)

    assert call == OutboundCall(call_sid=call.call_sid, status="queued")
    assert actions.records == [
        PlacedCall(TO, TWIML, "https://x.test/status", True, call.call_sid),
        Transferred(call.call_sid, AGENT, "One moment."),
        SmsSent(TO, "Booked for Friday", sms),
        HungUp(CALL_SID),
    ]
    assert call.call_sid.startswith("CA")
    assert sms.startswith("SM")
    assert len({call.call_sid[2:], sms[2:]}) == 2
    assert len(call.call_sid) == len(sms) == 34


async def test_sids_are_deterministic() -> None:
    first, second = RecordingActions(), RecordingActions()

    assert await first.place_call(TO, TWIML) == await second.place_call(TO, TWIML)


async def test_of_type_filters_the_records() -> None:
    actions = RecordingActions()
    await actions.send_sms(TO, "a")
    await actions.hangup(CALL_SID)
    await actions.send_sms(TO, "b")

    assert [sms.body for sms in actions.of_type(SmsSent)] == ["a", "b"]
    assert actions.of_type(HungUp) == [HungUp(CALL_SID)]


async def test_hangup_is_recorded_once_per_call() -> None:
    actions = RecordingActions()
    other = "CA" + "b" * 32

    await actions.hangup(CALL_SID)
    await asyncio.gather(actions.hangup(CALL_SID), actions.hangup(other), actions.hangup(other))

    assert actions.records == [HungUp(CALL_SID), HungUp(other)]


async def test_an_injected_404_on_hangup_means_already_ended() -> None:
    actions = RecordingActions()
    actions.fail_next("hangup", TelephonyError("hangup", "the call has already ended", status=404))

    await actions.hangup(CALL_SID)
    await actions.hangup(CALL_SID)

    assert actions.records == [HungUp(CALL_SID, already_ended=True)]


async def test_a_failed_hangup_raises_and_may_be_retried() -> None:
    actions = RecordingActions()
    actions.fail_next("hangup")

    with pytest.raises(TelephonyError) as caught:
        await actions.hangup(CALL_SID)
    await actions.hangup(CALL_SID)
    await actions.hangup(CALL_SID)

    assert caught.value.status == 500
    assert actions.records == [Failed("hangup", caught.value), HungUp(CALL_SID)]


async def test_hangup_after_a_transfer_records_nothing() -> None:
    actions = RecordingActions()

    await actions.transfer(CALL_SID, AGENT)
    await actions.hangup(CALL_SID)

    assert actions.records == [Transferred(CALL_SID, AGENT)]


@pytest.mark.parametrize("action", ["place_call", "transfer", "send_sms"])
async def test_fail_next_raises_the_given_error_once(action: str) -> None:
    actions = RecordingActions()
    error = TelephonyError(action, "Too Many Requests — retry later", status=429)
    actions.fail_next(action, error)  # type: ignore[arg-type]

    async def act() -> object:
        if action == "place_call":
            return await actions.place_call(TO, TWIML)
        if action == "transfer":
            return await actions.transfer(CALL_SID, AGENT)
        return await actions.send_sms(TO, "hi")

    with pytest.raises(TelephonyError) as caught:
        await act()
    await act()

    assert caught.value is error
    assert actions.records[0] == Failed(action, error)  # type: ignore[arg-type]
    assert len(actions.records) == 2
    assert not isinstance(actions.records[1], Failed)


async def test_fail_next_queues_several_failures_per_action() -> None:
    actions = RecordingActions()
    actions.fail_next("send_sms", times=2)

    for _ in range(2):
        with pytest.raises(TelephonyError, match="injected"):
            await actions.send_sms(TO, "hi")
    await actions.send_sms(TO, "hi")
    await actions.place_call(TO, TWIML)  # other actions were never affected

    assert [type(record) for record in actions.records] == [Failed, Failed, SmsSent, PlacedCall]


def test_fail_next_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="unknown action 'dial'"):
        RecordingActions().fail_next("dial")  # type: ignore[arg-type]


async def test_requests_twilio_would_refuse_are_refused_here_too() -> None:
    actions = RecordingActions()

    with pytest.raises(TelephonyError, match="4001 characters"):
        await actions.place_call(TO, "x" * 4001)
    with pytest.raises(TelephonyError, match="empty"):
        await actions.send_sms(TO, "")
    with pytest.raises(TelephonyError, match="no number"):
        await actions.transfer(CALL_SID, "")

    assert actions.records == []
