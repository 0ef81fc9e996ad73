"""Input hardening over loopback: identifier shapes, body and message sizes, rates, logins, capacity."""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest

from voicefsm.core.identifiers import (
    MAX_PARAMETER_VALUE,
    MAX_PARAMETERS,
    InvalidIdentifier,
    check_parameters,
    check_sid,
    is_call_sid,
)
from voicefsm.core.rates import TokenBuckets
from voicefsm.runtime.call import Call
from voicefsm.server.app import create_app
from voicefsm.server.auth import LOGIN_CSRF_COOKIE
from voicefsm.server.limits import client_address, parse_networks
from voicefsm.server.services import CallServices
from voicefsm.server.serving import RunningServer, running_server
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.signature import compute_signature

AUTH_TOKEN = "test-auth-token"
PUBLIC_URL = "https://voice.example.test"
API_TOKEN = "api-token-for-tests"
SID = "CA" + "1" * 32


def make_settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def production(**values: object) -> Settings:
    return make_settings(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        VOICEFSM_PUBLIC_URL=PUBLIC_URL,
        VOICEFSM_API_TOKENS=API_TOKEN,
        VOICEFSM_COOKIE_SECURE="false",
        **values,
    )


def signed(path: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, f"{PUBLIC_URL}{path}", form)}


class Lines:
    """Calls on the line: each stays until it is disconnected; ``started`` is set as each begins."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.sids: list[str] = []

    async def handler(self, call: Call) -> None:
        self.sids.append(call.call_sid)
        self.started.set()
        await call.disconnected.wait()


@contextlib.asynccontextmanager
async def served(
    settings: Settings, lines: Lines | None = None
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    handler = (lines or Lines()).handler
    app = create_app(settings, CallServices(handler=handler))  # type: ignore[arg-type]
    async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        yield server, http


# -- shapes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("CallSid", "CA" + "a" * 32),
        ("CallSid", "CA" + "A" * 32),
        ("AccountSid", "AC" + "0" * 32),
        ("StreamSid", "MZ" + "f" * 32),
        ("MessageSid", "SM" + "1" * 32),
    ],
)
def test_twilio_sids_of_the_right_shape_pass(field: str, value: str) -> None:
    assert check_sid(field, value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "CA1",
        "CA" + "g" * 32,
        "MZ" + "1" * 32,
        "CA" + "1" * 33,
        "../../etc/passwd",
        "CA" + "1" * 31 + "\n",
    ],
)
def test_anything_else_is_refused_with_the_expected_shape(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        check_sid("CallSid", value)
    assert "CA followed by 32 hex digits" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not is_call_sid(value)


def test_stream_parameters_are_bounded_in_number_length_and_characters() -> None:
    assert check_parameters({"token": "abc", "first name": "Ada\tLovelace"}) == {
        "token": "abc",
        "first name": "Ada\tLovelace",
    }
    too_many = {f"p{n}": "x" for n in range(MAX_PARAMETERS + 1)}
    for bad, words in [
        (too_many, "at most 32"),
        ({"x" * 65: "v"}, "1 to 64"),
        ({"": "v"}, "1 to 64"),
        ({"name": "v" * (MAX_PARAMETER_VALUE + 1)}, "at most 1024"),
        ({"name": "a\x00b"}, "control characters"),
        ({"na\rme": "v"}, "printable"),
    ]:
        with pytest.raises(InvalidIdentifier, match=words):
            check_parameters(bad)


async def test_webhooks_with_a_malformed_sid_get_400_and_no_ticket() -> None:
    async with served(production()) as (_, http):
        for form in (
            {"CallSid": "CA1", "From": "+15550001111"},
            {"CallSid": SID, "AccountSid": "AC-not-an-account"},
        ):
            response = await http.post("/twilio/voice", data=form, headers=signed("/twilio/voice", form))
            assert response.status_code == 400, response.text
            assert "32 hex digits" in response.text
        form = {"CallSid": "../../etc/passwd", "CallStatus": "completed"}
        response = await http.post("/twilio/status", data=form, headers=signed("/twilio/status", form))
        assert response.status_code == 400


@pytest.mark.parametrize(
    ("call_sid", "stream_sid", "parameters"),
    [
        ("CA1", None, {}),
        (None, "MZ-not-a-stream", {}),
        (None, None, {f"p{n}": "x" for n in range(MAX_PARAMETERS + 1)}),
        (None, None, {"note": "x" * (MAX_PARAMETER_VALUE + 1)}),
    ],
)
async def test_a_stream_whose_start_is_malformed_is_refused_before_any_session(
    call_sid: str | None, stream_sid: str | None, parameters: dict[str, str]
) -> None:
    opened: list[str] = []

    async def handler(call: Call) -> None:
        opened.append(call.call_sid)

    app = create_app(make_settings(), CallServices(handler=handler))  # type: ignore[arg-type]
    async with (
        running_server(app) as server,
        TwilioStreamClient(
            f"{server.ws_url}/twilio/stream",
            call_sid=call_sid,
            stream_sid=stream_sid,
            custom_parameters=parameters,
        ) as twilio,
    ):
        assert await twilio.wait_closed() == 1008
    assert opened == []


# -- sizes ----------------------------------------------------------------------------------------------


async def test_a_webhook_body_over_the_limit_gets_413_before_it_is_read() -> None:
    async with served(production(VOICEFSM_MAX_WEBHOOK_BYTES=4096)) as (_, http):
        big = {"CallSid": SID, "Padding": "x" * 5000}
        response = await http.post("/twilio/voice", data=big, headers=signed("/twilio/voice", big))
        assert response.status_code == 413
        assert "at most 4096" in response.json()["detail"]


async def test_a_chunked_body_over_the_limit_gets_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"CallSid=" + SID.encode()
        for _ in range(100):
            yield b"&x=" + b"y" * 1000

    async with served(production(VOICEFSM_MAX_WEBHOOK_BYTES=4096)) as (_, http):
        response = await http.post(
            "/twilio/voice",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 413
        small = await http.post("/twilio/voice", content=_one(b"CallSid=" + SID.encode()), headers=_form())
        assert small.status_code == 403  # read whole and handed on: unsigned, so refused by its signature


async def test_a_client_that_stops_sending_after_the_limit_still_gets_its_413() -> None:
    """curl stops uploading when it sees an error status: the server must not wait for the rest first."""
    async with served(production(VOICEFSM_MAX_WEBHOOK_BYTES=4096)) as (server, _):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            head = (
                "POST /twilio/voice HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            )
            chunk = b"x" * 5000
            writer.write(head.encode() + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()  # over the limit, and then nothing more: no last chunk
            answer = await asyncio.wait_for(reader.read(), 10)  # all of it: the server closes after it
        finally:
            writer.close()
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert answer.endswith(b'"the request body is over the 4096 bytes accepted"}'), answer


def _form() -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded"}


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_api_has_its_own_larger_body_limit() -> None:
    async with served(production(VOICEFSM_MAX_REQUEST_BYTES=8192)) as (_, http):
        response = await http.post(
            "/api/phone/ticket",
            content=b"{" + b" " * 9000 + b"}",
            headers={"authorization": f"Bearer {API_TOKEN}", "content-type": "application/json"},
        )
        assert response.status_code == 413


# -- rates -----------------------------------------------------------------------------------------------


def test_a_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 4.0, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    assert TokenBuckets(0, 0).take("a") == 0.0  # rate 0: no limit


#: A client behind the (trusted) loopback proxy; loopback itself has no per-address bucket.
BEHIND_PROXY = {"VOICEFSM_TRUSTED_PROXIES": "127.0.0.1"}
CLIENT = {"x-forwarded-for": "203.0.113.7"}


async def test_a_client_over_its_rate_gets_429_with_retry_after() -> None:
    async with served(make_settings(VOICEFSM_RATE_LIMIT_PER_IP=1, **BEHIND_PROXY)) as (_, http):
        answers = [await http.get("/api/calls", headers=CLIENT) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] != [429, 429]
        assert answers[2].status_code == 429
        assert int(answers[2].headers["retry-after"]) >= 1
        assert "retry" in answers[2].json()["detail"]
        assert (await http.get("/healthz", headers=CLIENT)).status_code == 200  # health is not limited
        assert (await http.get("/api/calls")).status_code == 200  # loopback itself: only the global limit


async def test_the_global_rate_limits_every_client_together() -> None:
    async with served(make_settings(VOICEFSM_RATE_LIMIT_GLOBAL=1, VOICEFSM_RATE_LIMIT_PER_IP=0)) as (_, http):
        statuses = [(await http.get("/api/calls")).status_code for _ in range(3)]
        assert statuses[2] == 429


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    # The proxy is trusted; the client behind it adds addresses of its own to the left: ignored.
    spoofing = make_settings(VOICEFSM_RATE_LIMIT_PER_IP=1, VOICEFSM_RATE_LIMIT_GLOBAL=0, **BEHIND_PROXY)
    async with served(spoofing) as (_, http):
        statuses = [
            (
                await http.get("/api/calls", headers={"x-forwarded-for": f"198.51.100.{n}, 203.0.113.7"})
            ).status_code
            for n in range(3)
        ]
        assert statuses[2] == 429  # a new address per request does not buy new tokens
    behind_proxy = make_settings(
        VOICEFSM_RATE_LIMIT_PER_IP=1, VOICEFSM_RATE_LIMIT_GLOBAL=0, VOICEFSM_TRUSTED_PROXIES="127.0.0.1"
    )
    async with served(behind_proxy) as (_, http):
        statuses = [
            (await http.get("/api/calls", headers={"x-forwarded-for": f"203.0.113.{n}"})).status_code
            for n in range(3)
        ]
        assert 429 not in statuses  # each client behind the proxy has its own bucket


def test_the_client_is_the_last_untrusted_hop() -> None:
    trusted = parse_networks("127.0.0.1, 10.0.0.0/8")
    scope = {
        "client": ("10.1.2.3", 5000),
        "headers": [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.9, 10.0.0.5")],
    }
    assert client_address(scope, trusted) == "203.0.113.9"
    assert client_address(scope, ()) == "10.1.2.3"
    assert client_address({"client": ("192.0.2.1", 1), "headers": scope["headers"]}, trusted) == "192.0.2.1"
    with pytest.raises(ValueError, match=r"VOICEFSM_TRUSTED_PROXIES: 'proxy\.local'"):
        parse_networks("proxy.local")


# -- logins ------------------------------------------------------------------------------------------------


async def _login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await http.get("/login")
    csrf = page.cookies.get(LOGIN_CSRF_COOKIE) or http.cookies.get(LOGIN_CSRF_COOKIE)
    assert csrf is not None
    return await http.post("/login", data={"token": token, "csrf": csrf, "next": "/"})


async def test_failed_logins_are_limited_per_address() -> None:
    async with served(production(VOICEFSM_LOGIN_ATTEMPTS_PER_MINUTE=2)) as (_, http):
        assert (await _login(http, "wrong-1")).status_code == 401
        assert (await _login(http, "wrong-2")).status_code == 401
        refused = await _login(http, API_TOKEN)  # even the right token: this address must wait
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_good_logins_spend_no_attempts() -> None:
    async with served(production(VOICEFSM_LOGIN_ATTEMPTS_PER_MINUTE=1)) as (_, http):
        for _ in range(3):
            assert (await _login(http, API_TOKEN)).status_code == 303


# -- capacity ---------------------------------------------------------------------------------------------


def stream_token(twiml: str) -> str | None:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        return None
    return next(p.attrib["value"] for p in stream.findall("Parameter") if p.attrib["name"] == "token")


async def test_answered_calls_waiting_for_their_stream_count_against_the_maximum() -> None:
    lines = Lines()
    async with served(production(VOICEFSM_MAX_CONCURRENT_CALLS=1), lines) as (server, http):
        first = {"CallSid": SID, "From": "+15550001111"}
        second = {"CallSid": "CA" + "2" * 32, "From": "+15550002222"}
        answered = await http.post("/twilio/voice", data=first, headers=signed("/twilio/voice", first))
        token = stream_token(answered.text)
        assert token is not None
        busy = await http.post("/twilio/voice", data=second, headers=signed("/twilio/voice", second))
        assert busy.status_code == 200 and stream_token(busy.text) is None
        root = ET.fromstring(busy.text)
        assert [child.tag for child in root] == ["Say", "Hangup"] and "busy" in (root[0].text or "")
        retried = await http.post("/twilio/voice", data=first, headers=signed("/twilio/voice", first))
        assert retried.text == answered.text  # Twilio's retry of the answered call is not turned away
        stream_headers = {
            "X-Twilio-Signature": compute_signature(AUTH_TOKEN, "wss://voice.example.test/twilio/stream", {})
        }
        async with TwilioStreamClient(
            f"{server.ws_url}/twilio/stream",
            call_sid=SID,
            headers=stream_headers,
            custom_parameters={"token": token},
        ) as twilio:
            await asyncio.wait_for(lines.started.wait(), 5)
            assert lines.sids == [SID]
            still_busy = await http.post(
                "/twilio/voice", data=second, headers=signed("/twilio/voice", second)
            )
            assert stream_token(still_busy.text) is None
            await twilio.stop()


async def test_the_browser_phone_gets_no_ticket_when_every_line_is_taken() -> None:
    async with served(make_settings(VOICEFSM_MAX_CONCURRENT_CALLS=1)) as (_, http):
        first = await http.post("/api/phone/ticket", json={"call_sid": SID})
        assert first.status_code == 200
        second = await http.post("/api/phone/ticket", json={"call_sid": "CA" + "3" * 32})
        assert second.status_code == 503
        assert "all lines are busy" in second.json()["detail"]
