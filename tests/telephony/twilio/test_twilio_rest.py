"""TwilioRest through the real twilio SDK against a loopback fake of Twilio's REST API."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN, Fault, TwilioRestFake
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

from voicefsm.core.actions import OutboundCall, TelephonyActions
from voicefsm.errors import TelephonyError
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.rest import TwilioRest, mask_number

FROM = "+15551230002"
TO = "+15551230001"
AGENT = "+15551230003"
CALLBACK = "https://voice.example.test/twilio/status"
TWIML = '<Response><Connect><Stream url="wss://voice.example.test/twilio/stream"/></Connect></Response>'
CALL_SID = "CA" + "a" * 32
CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
CALL = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.fixture
def fake() -> Iterator[TwilioRestFake]:
    with TwilioRestFake() as fake:
        yield fake


@pytest.fixture
def rest(fake: TwilioRestFake) -> TwilioRest:
    return TwilioRest(ACCOUNT_SID, AUTH_TOKEN, FROM, timeout_s=1, api_base=fake.base_url)


def test_it_is_telephony_actions(rest: TwilioRest) -> None:
    assert isinstance(rest, TelephonyActions)


async def test_place_call_sends_twiml_callback_and_every_progress_event(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    call = await rest.place_call(TO, TWIML, status_callback=CALLBACK)

    [request] = fake.requests
    assert (request.method, request.path, request.authorized) == ("POST", CALLS, True)
    assert request.value("To") == TO
    assert request.value("From") == FROM
    assert request.value("Twiml") == TWIML
    assert request.value("StatusCallback") == CALLBACK
    assert request.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert "MachineDetection" not in request.form
    assert call == OutboundCall(call_sid=next(iter(fake.call_status)), status="queued")
    assert call.call_sid.startswith("CA")


async def test_place_call_without_callback_sends_no_callback_fields(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await rest.place_call(TO, TWIML)

    [request] = fake.requests
    assert not {"StatusCallback", "StatusCallbackEvent", "MachineDetection"} & request.form.keys()


async def test_place_call_asks_for_async_answering_machine_detection(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await rest.place_call(TO, TWIML, status_callback=CALLBACK, machine_detection=True)

    [request] = fake.requests
    assert request.value("MachineDetection") == "DetectMessageEnd"
    assert request.value("AsyncAmd") == "true"
    assert request.value("AsyncAmdStatusCallback") == CALLBACK


async def test_place_call_refuses_twiml_twilio_would_reject(rest: TwilioRest, fake: TwilioRestFake) -> None:
    with pytest.raises(TelephonyError, match="4001 characters") as caught:
        await rest.place_call(TO, "x" * 4001)

    assert caught.value.action == "place_call"
    assert fake.requests == []


@pytest.mark.parametrize("say", [None, "Transferring you now."])
async def test_transfer_replaces_the_twiml_with_a_dial(
    rest: TwilioRest, fake: TwilioRestFake, say: str | None
) -> None:
    await rest.transfer(CALL_SID, AGENT, say=say)

    [request] = fake.requests
    assert (request.path, request.authorized) == (CALL, True)
    assert "Status" not in request.form
    response = ET.fromstring(request.value("Twiml") or "")
    assert response.tag == "Response"
    assert response.findtext("Dial/Number") == AGENT
    assert response.findtext("Say") == say


async def test_hangup_sends_status_completed_once_even_when_called_twice(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await rest.hangup(CALL_SID)
    await rest.hangup(CALL_SID)

    assert [(r.path, dict(r.form)) for r in fake.requests] == [(CALL, {"Status": ["completed"]})]
    assert fake.call_status[CALL_SID] == "completed"


async def test_concurrent_hangups_share_one_request(rest: TwilioRest, fake: TwilioRestFake) -> None:
    await asyncio.gather(*(rest.hangup(CALL_SID) for _ in range(5)))

    assert len(fake.requests) == 1


async def test_hangup_of_another_call_is_sent_too(rest: TwilioRest, fake: TwilioRestFake) -> None:
    other = "CA" + "b" * 32
    await rest.hangup(CALL_SID)
    await rest.hangup(other)

    assert [r.path.rsplit("/", 1)[-1] for r in fake.requests] == [f"{CALL_SID}.json", f"{other}.json"]


async def test_hangup_of_a_call_that_already_ended_is_not_an_error(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    fake.fail_next(Fault.not_found())

    await rest.hangup(CALL_SID)
    await rest.hangup(CALL_SID)

    assert len(fake.requests) == 1


async def test_hangup_of_a_call_not_in_progress_is_not_an_error(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    fake.fail_next(Fault(400, 21220, "Call is not in-progress. Cannot redirect."))

    await rest.hangup(CALL_SID)

    assert len(fake.requests) == 1


async def test_a_failed_hangup_raises_and_may_be_retried(rest: TwilioRest, fake: TwilioRestFake) -> None:
    fake.fail_next(Fault.server_error())

    with pytest.raises(TelephonyError) as caught:
        await rest.hangup(CALL_SID)
    await rest.hangup(CALL_SID)
    await rest.hangup(CALL_SID)

    assert caught.value.status == 500
    assert len(fake.requests) == 2
    assert fake.call_status[CALL_SID] == "completed"


async def test_hangup_after_a_transfer_does_not_cut_the_transfer_off(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await rest.transfer(CALL_SID, AGENT)
    await rest.hangup(CALL_SID)

    assert [r.value("Status") for r in fake.requests] == [None]


async def test_send_sms_returns_the_message_sid(rest: TwilioRest, fake: TwilioRestFake) -> None:
    sid = await rest.send_sms(TO, "Your booking is confirmed")

    [request] = fake.requests
    assert (request.path, request.authorized) == (MESSAGES, True)
    assert dict(request.form) == {"To": [TO], "From": [FROM], "Body": ["Your booking is confirmed"]}
    assert sid.startswith("SM")
    assert len(sid) == 34


async def test_send_sms_refuses_an_empty_body(rest: TwilioRest, fake: TwilioRestFake) -> None:
    with pytest.raises(TelephonyError, match="empty"):
        await rest.send_sms(TO, "")

    assert fake.requests == []


async def _act(rest: TwilioRest, action: str) -> object:
    if action == "place_call":
        return await rest.place_call(TO, TWIML)
    if action == "transfer":
        return await rest.transfer(CALL_SID, AGENT)
    if action == "hangup":
        return await rest.hangup(CALL_SID)
    return await rest.send_sms(TO, "hello")


ACTIONS = ["place_call", "transfer", "hangup", "send_sms"]


@pytest.mark.parametrize("action", ACTIONS)
async def test_rate_limit_becomes_a_telephony_error_saying_retry_later(
    rest: TwilioRest, fake: TwilioRestFake, action: str
) -> None:
    fake.fail_next(Fault.too_many_requests())

    with pytest.raises(TelephonyError) as caught:
        await _act(rest, action)

    assert (caught.value.action, caught.value.status) == (action, 429)
    assert str(caught.value).startswith(f"Twilio {action} failed (HTTP 429): Too Many Requests")
    assert str(caught.value).endswith("— retry later")
    assert "20429" in str(caught.value)


@pytest.mark.parametrize("action", ACTIONS)
async def test_server_error_becomes_a_telephony_error(
    rest: TwilioRest, fake: TwilioRestFake, action: str
) -> None:
    fake.fail_next(Fault.server_error())

    with pytest.raises(TelephonyError) as caught:
        await _act(rest, action)

    assert caught.value.status == 500
    assert "retry later" in str(caught.value)


async def test_not_found_on_transfer_is_an_error(rest: TwilioRest, fake: TwilioRestFake) -> None:
    fake.fail_next(Fault.not_found())

    with pytest.raises(TelephonyError) as caught:
        await rest.transfer(CALL_SID, AGENT)

    assert caught.value.status == 404
    assert "may have ended already" in str(caught.value)


async def test_an_error_without_a_json_body_still_names_the_status(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    fake.fail_next(Fault(503))

    with pytest.raises(TelephonyError) as caught:
        await rest.send_sms(TO, "hello")

    assert str(caught.value).startswith("Twilio send_sms failed (HTTP 503): Service Unavailable")


@pytest.mark.parametrize("action", ["place_call", "hangup"])
async def test_a_silent_server_fails_within_the_timeout(
    rest: TwilioRest, fake: TwilioRestFake, action: str
) -> None:
    fake.fail_next(Fault.never_answer())

    started = time.monotonic()
    with pytest.raises(TelephonyError) as caught:
        await _act(rest, action)
    elapsed = time.monotonic() - started

    assert 0.9 < elapsed < 1.9  # timeout_s=1 (the socket timeout), well before the asyncio backstop
    assert caught.value.status is None
    assert "no answer from Twilio within 1 s" in str(caught.value)


class _RebasedWithoutTimeout(TwilioHttpClient):
    """The SDK's default client (no socket timeout), pointed at the fake: only asyncio can stop it."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = urlsplit(base)

    def request(self, method: str, url: str, *args: object, **kwargs: object) -> Response:
        parts = urlsplit(url)
        url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


async def test_the_asyncio_deadline_holds_when_the_http_client_has_none(fake: TwilioRestFake) -> None:
    rest = TwilioRest(
        ACCOUNT_SID, AUTH_TOKEN, FROM, timeout_s=0.2, http_client=_RebasedWithoutTimeout(fake.base_url)
    )
    fake.fail_next(Fault.never_answer())

    started = time.monotonic()
    with pytest.raises(TelephonyError, match=r"no answer from Twilio within 0\.2 s"):
        await rest.send_sms(TO, "hello")

    assert time.monotonic() - started < 2.0


async def test_bad_credentials_become_a_401_naming_the_settings(fake: TwilioRestFake) -> None:
    rest = TwilioRest(ACCOUNT_SID, "wrong-token", FROM, timeout_s=1, api_base=fake.base_url)

    with pytest.raises(TelephonyError) as caught:
        await rest.place_call(TO, TWIML)

    [request] = fake.requests
    assert not request.authorized
    assert caught.value.status == 401
    assert "TWILIO_AUTH_TOKEN" in str(caught.value)
    assert "wrong-token" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_becomes_a_telephony_error() -> None:
    port = _closed_port()
    rest = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, FROM, timeout_s=1, api_base=f"http://127.0.0.1:{port}")

    with pytest.raises(TelephonyError) as caught:
        await rest.hangup(CALL_SID)

    assert caught.value.status is None
    assert f"could not connect to http://127.0.0.1:{port}" in str(caught.value)
    assert "TWILIO_API_BASE" in str(caught.value)


async def test_region_and_edge_hosts_are_rebased_too(fake: TwilioRestFake) -> None:
    rest = TwilioRest(
        ACCOUNT_SID, AUTH_TOKEN, FROM, timeout_s=1, api_base=fake.base_url, region="ie1", edge="dublin"
    )

    await rest.send_sms(TO, "hello")

    assert [r.path for r in fake.requests] == [MESSAGES]


async def test_phone_numbers_and_token_stay_out_of_errors_and_logs(
    rest: TwilioRest, fake: TwilioRestFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(Fault(400, 21211, f"The 'To' number {TO} is not a valid phone number."))

    with pytest.raises(TelephonyError) as caught:
        await rest.send_sms(TO, "hello")
    await rest.place_call(TO, TWIML)
    await rest.transfer(CALL_SID, AGENT)

    text = str(caught.value)
    assert "The 'To' number ***0001 is not a valid phone number. (Twilio error 21211" in text
    assert "https://www.twilio.com/docs/errors/21211" in text
    everything = caplog.text + text + repr(rest)
    assert "***0001" in caplog.text
    for secret in (TO, AGENT, FROM, AUTH_TOKEN):
        assert secret not in everything


def test_mask_number_keeps_only_the_last_four_digits() -> None:
    assert mask_number("+15551230001") == "***0001"
    assert mask_number("123") == "***"


def _settings(**values: object) -> Settings:
    twilio: dict[str, object] = {
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "twilio_phone_number": None,
        "twilio_api_base": None,
    }
    return Settings(_env_file=None, **(twilio | values))  # type: ignore[call-arg]


def test_from_settings_names_every_missing_variable() -> None:
    with pytest.raises(TelephonyError) as caught:
        TwilioRest.from_settings(_settings(twilio_account_sid=ACCOUNT_SID))

    assert "TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER are not set" in str(caught.value)
    assert "TWILIO_ACCOUNT_SID" not in str(caught.value)


async def test_from_settings_uses_the_api_base_and_timeout(fake: TwilioRestFake) -> None:
    settings = _settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_phone_number=FROM,
        twilio_api_base=fake.base_url,
        twilio_timeout_s=3,
    )
    rest = TwilioRest.from_settings(settings)

    await rest.hangup(CALL_SID)

    assert rest.timeout_s == 3
    assert [(r.path, r.authorized) for r in fake.requests] == [(CALL, True)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_base": "127.0.0.1:8080"}, "api_base must look like"),
        ({"api_base": "http://127.0.0.1:1", "http_client": TwilioHttpClient(timeout=1)}, "not both"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TwilioRest(ACCOUNT_SID, AUTH_TOKEN, FROM, **kwargs)  # type: ignore[arg-type]


# -- status callbacks on everything that takes one (issue 16: reconciled at /twilio/status) ----------


@pytest.fixture
def reporting_rest(fake: TwilioRestFake) -> TwilioRest:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_PHONE_NUMBER=FROM,
        TWILIO_API_BASE=fake.base_url,
        VOICEFSM_PUBLIC_URL="https://voice.example.test",
    )
    return TwilioRest.from_settings(settings)


async def test_a_call_placed_without_a_callback_reports_to_the_servers_status_route(
    reporting_rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await reporting_rest.place_call(TO, TWIML)
    [request] = fake.requests
    assert request.value("StatusCallback") == CALLBACK
    assert request.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]


async def test_a_campaigns_own_callback_wins_over_the_default(
    reporting_rest: TwilioRest, fake: TwilioRestFake
) -> None:
    own = "https://voice.example.test/twilio/campaign/7"
    await reporting_rest.place_call(TO, TWIML, status_callback=own)
    [request] = fake.requests
    assert request.value("StatusCallback") == own


async def test_a_transfers_dialed_leg_reports_its_status(
    reporting_rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await reporting_rest.transfer(CALL_SID, AGENT)
    [request] = fake.requests
    number = ET.fromstring(request.value("Twiml") or "").find("./Dial/Number")
    assert number is not None and number.text == AGENT
    assert number.attrib["statusCallback"] == CALLBACK
    assert number.attrib["statusCallbackEvent"] == "initiated ringing answered completed"


async def test_an_sms_reports_its_delivery_status(reporting_rest: TwilioRest, fake: TwilioRestFake) -> None:
    await reporting_rest.send_sms(TO, "Your booking is confirmed")
    [request] = fake.requests
    assert request.value("StatusCallback") == CALLBACK


async def test_without_a_public_url_nothing_asks_for_callbacks(
    rest: TwilioRest, fake: TwilioRestFake
) -> None:
    await rest.send_sms(TO, "Your booking is confirmed")
    await rest.transfer(CALL_SID, AGENT)
    sms, transfer = fake.requests
    assert "StatusCallback" not in sms.form
    assert "statusCallback" not in (transfer.value("Twiml") or "")
