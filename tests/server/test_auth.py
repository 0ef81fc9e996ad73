"""Access control on a production-configured app: tokens, the login page, session cookies and CSRF."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute, Route
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voicefsm.server.app import create_app
from voicefsm.server.auth import CSRF_COOKIE, OPEN_PATHS, SESSION_COOKIE
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.signature import compute_signature

TOKEN = "tok-primary-0123456789"
OTHER = "tok-second-abcdefghijkl"
SID = "CA" + "0" * 32
BASE = "http://testserver"


def production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "twilio_auth_token": "twilio-secret",
        "public_url": "https://voice.example.test",
        "api_tokens": f"{TOKEN}, {OTHER}",
        "secret_key": "session-signing-key",
        "recordings_dir": None,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def production_app(**overrides: object) -> FastAPI:
    return create_app(production(**overrides), flow_description={"states": [], "transitions": []})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = production_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", SID, path)


def all_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(full path, route) for every route, into included routers (FastAPI keeps them nested)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Route | APIRoute | APIWebSocketRoute):
            yield prefix + route.path, route


def guarded_http_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves that is not a Twilio entry point or an open page."""
    found = []
    for path, route in all_routes(app.routes):
        if isinstance(route, Route | APIRoute) and not path.startswith("/twilio/") and path not in OPEN_PATHS:
            found.extend((method, concrete(path)) for method in sorted(route.methods or ()))
    return found


async def test_every_non_twilio_route_refuses_an_anonymous_client(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    routes = guarded_http_routes(app)
    assert ("GET", "/api/calls") in routes and ("GET", "/metrics") in routes and ("GET", "/") in routes
    for method, path in routes:
        response = await client.request(method, path, json={})
        if response.status_code == 303:
            assert response.headers["location"].startswith("/login?next="), (method, path)
        else:
            assert response.status_code in (401, 403), (method, path, response.status_code)


async def test_a_valid_token_opens_the_api_recordings_and_metrics(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/calls", "/api/flow", "/metrics"):
        assert (await client.get(path, headers=auth)).status_code == 200, path
    # A call that does not exist is a 404 once past the door, not a 401.
    assert (await client.get(f"/api/calls/{SID}/recording", headers=auth)).status_code == 404
    second = {"Authorization": f"Bearer {OTHER}"}
    assert (await client.get("/api/calls", headers=second)).status_code == 200
    app = client._transport.app  # type: ignore[attr-defined]
    for method, path in guarded_http_routes(app):
        response = await client.request(method, path, headers=auth, json={})
        assert response.status_code not in (401, 403) or path.endswith("/caller"), (method, path)


async def test_a_wrong_token_is_refused_counted_and_never_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "tok-WRONG-secret-value"
    with caplog.at_level(logging.INFO):
        response = await client.get("/api/calls", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert "access refused (bad_token): GET /api/calls" in caplog.text
    assert wrong not in caplog.text and TOKEN not in caplog.text
    metrics = (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    assert 'voicefsm_auth_failures_total{kind="bad_token"} 1.0' in metrics
    assert wrong not in metrics


async def test_dev_mode_stays_open() -> None:
    app = create_app(Settings.model_validate({"recordings_dir": None}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.get("/api/calls")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/login")).status_code == 303


async def test_tokens_rotate_through_the_file_without_a_restart(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\nfirst-token-aaaa\n", encoding="utf-8")
    app = production_app(api_tokens=None, api_tokens_file=str(tokens))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:

        async def status(token: str) -> int:
            return (await http.get("/api/calls", headers={"Authorization": f"Bearer {token}"})).status_code

        assert await status("first-token-aaaa") == 200
        assert await status("# operators") == 401
        tokens.write_text("second-token-bbbbbbbb\n", encoding="utf-8")
        stat = tokens.stat()
        os.utime(tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert await status("first-token-aaaa") == 401
        assert await status("second-token-bbbbbbbb") == 200
        tokens.unlink()
        assert await status("second-token-bbbbbbbb") == 401


def cookies_from(response: httpx.Response) -> dict[str, SimpleCookie]:
    jar: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            jar[name] = cookie
    return jar


async def log_in(http: httpx.AsyncClient, token: str, target: str = "/calls") -> httpx.Response:
    form = await http.get("/login", params={"next": target})
    assert form.status_code == 200 and "no-store" in form.headers["cache-control"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    login_cookie = form.headers["set-cookie"].split(";")[0]
    return await http.post(
        "/login",
        data={"csrf": csrf.group(1), "next": target, "token": token},
        headers={"Cookie": login_cookie},
    )


async def test_login_sets_a_strict_session_and_the_pages_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/calls")).headers["location"] == "/login?next=%2Fcalls"
    refused = await log_in(client, "not-a-token")
    assert refused.status_code == 401 and "That token is not valid." in refused.text
    response = await log_in(client, TOKEN)
    assert response.status_code == 303 and response.headers["location"] == "/calls"
    jar = cookies_from(response)
    session = jar[SESSION_COOKIE][SESSION_COOKIE]
    assert session["httponly"] and session["secure"] and session["samesite"] == "strict"
    csrf = jar[CSRF_COOKIE][CSRF_COOKIE]
    assert not csrf["httponly"] and csrf["secure"] and csrf["samesite"] == "strict"
    cookie = {"Cookie": f"{SESSION_COOKIE}={session.value}"}
    for path in ("/", "/calls", "/api/calls", "/metrics"):
        opened = await client.get(path, headers=cookie)
        assert opened.status_code == 200, path
        assert opened.headers["cache-control"] == "no-store", path  # gone from the cache at log-out
    # Changing state with the cookie needs the CSRF header, as a cross-site form cannot send it.
    assert (await client.post("/logout", headers=cookie)).status_code == 403
    wrong = {**cookie, "X-CSRF-Token": "forged"}
    assert (await client.post("/logout", headers=wrong)).status_code == 403
    ticket = await client.post(
        "/api/phone/ticket", json={"call_sid": SID}, headers={**cookie, "X-CSRF-Token": csrf.value}
    )
    assert ticket.status_code == 200 and len(ticket.json()["token"]) >= 20
    again = await client.post(  # a call id that has a ticket (or a live call) is never handed out twice
        "/api/phone/ticket", json={"call_sid": SID}, headers={**cookie, "X-CSRF-Token": csrf.value}
    )
    assert again.status_code == 409
    out = await client.post("/logout", headers={**cookie, "X-CSRF-Token": csrf.value})
    assert out.status_code == 204 and f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
    metrics = (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    assert 'voicefsm_auth_failures_total{kind="login"} 1.0' in metrics
    assert 'voicefsm_auth_failures_total{kind="csrf"} 2.0' in metrics


async def test_login_refuses_a_forged_form_and_foreign_redirects(client: httpx.AsyncClient) -> None:
    forged = await client.post("/login", data={"csrf": "x", "next": "/", "token": TOKEN})
    assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get("set-cookie", "")
    for target in ("//evil.example", "https://evil.example/", "/\\evil.example"):
        response = await log_in(client, TOKEN, target)
        assert response.headers["location"] == "/", target


async def test_a_session_ends_with_its_token_and_with_a_tampered_cookie(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("rotating-token-1111\n", encoding="utf-8")
    app = production_app(api_tokens=OTHER, api_tokens_file=str(tokens))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        response = await log_in(http, "rotating-token-1111")
        session = cookies_from(response)[SESSION_COOKIE][SESSION_COOKIE].value

        async def page_status(cookie: str) -> int:
            return (await http.get("/calls", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})).status_code

        assert await page_status(session) == 200
        body, _, mac = session.partition(".")
        assert await page_status(f"{body}x.{mac}") == 303
        tokens.write_text("rotating-token-2222-new\n", encoding="utf-8")
        assert await page_status(session) == 303


async def test_websockets_need_credentials_and_this_origin() -> None:
    app = production_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        session = cookies_from(await log_in(http, TOKEN))[SESSION_COOKIE][SESSION_COOKIE].value
    async with running_server(app) as server:
        sockets = [path for path, route in all_routes(app.routes) if isinstance(route, APIWebSocketRoute)]
        assert "/api/calls/{call_sid}/events" in sockets
        for path in sockets:
            if path.startswith("/twilio/"):
                continue
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{server.ws_url}{concrete(path)}", open_timeout=5):
                    pass
            assert refused.value.response.status_code == 403, path
        url = f"{server.ws_url}/api/calls/{SID}/events"
        with pytest.raises(InvalidStatus) as anonymous:
            async with connect(url, open_timeout=5):
                pass
        assert anonymous.value.response.status_code == 403
        cookie = f"{SESSION_COOKIE}={session}"
        with pytest.raises(InvalidStatus) as foreign:
            async with connect(
                url, open_timeout=5, origin="https://evil.example", additional_headers={"Cookie": cookie}
            ):
                pass
        assert foreign.value.response.status_code == 403
        # The stream of a call that is not live answers "ended" once its wait is over; a bearer suffices.
        async with connect(
            url.replace(SID, "CA" + "1" * 32),
            open_timeout=5,
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
        ) as ws:
            assert ws.protocol.state.name == "OPEN"
        # Twilio's stream keeps its own check: no signature, no cookie -> refused.
        with pytest.raises(InvalidStatus) as unsigned:
            async with connect(f"{server.ws_url}/twilio/stream", open_timeout=5):
                pass
        assert unsigned.value.response.status_code == 403


async def test_a_signed_call_leaves_no_phone_number_or_secret_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caller = "+15557654321"
    form = {"CallSid": SID, "From": caller, "To": "+15550009999"}
    signature = compute_signature("twilio-secret", "https://voice.example.test/twilio/voice", form)
    with caplog.at_level(logging.DEBUG):
        answered = await client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
        forged = await client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "forged"})
        await client.get("/api/calls", headers={"Authorization": "Bearer " + TOKEN + "x"})
    assert answered.status_code == 200 and "<Stream" in answered.text
    assert forged.status_code == 403
    assert "rejected /twilio/voice" in caplog.text
    for secret in (caller, "7654321", "twilio-secret", TOKEN, "session-signing-key"):
        assert secret not in caplog.text, secret
