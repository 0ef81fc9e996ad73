"""Who may see what: API tokens for programs, a login session for people, signatures for Twilio.

Production (a Twilio auth token is set) closes everything that is not a Twilio entry point:

- ``/api/...`` (calls, transcripts, recordings, live events) and ``/metrics`` take
  ``Authorization: Bearer <token>``, or the session cookie of a logged-in page;
- the pages (``/``, ``/calls``, anything else) take the session cookie, and send a browser without
  one to ``/login``, where one of the API tokens is the password;
- a request that changes state with the cookie must carry the ``X-CSRF-Token`` header (the value of
  the readable ``voicefsm_csrf`` cookie; a cross-site page can neither read it nor send the
  SameSite=Strict session), and a cookie-authenticated WebSocket must come from this origin;
- ``/twilio/*`` is left to its signature check; ``/healthz``, ``/readyz``, ``/login`` and
  ``/static/*`` (the pages' code, no data) are open.

Tokens come from ``VOICEFSM_API_TOKENS`` (comma-separated) and ``VOICEFSM_API_TOKENS_FILE`` (one a
line, ``#`` comments), and the file is re-read when it changes, so tokens rotate without a restart.
A session remembers which token opened it (as a keyed fingerprint): removing the token ends its
sessions too. Dev mode (no Twilio auth token) is open and is kept on loopback by ``voicefsm serve``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from voicefsm.server.limits import limits_of
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "voicefsm_session"
CSRF_COOKIE = "voicefsm_csrf"
LOGIN_CSRF_COOKIE = "voicefsm_login_csrf"
CSRF_HEADER = "x-csrf-token"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
OPEN_PATHS = frozenset({"/healthz", "/readyz", LOGIN_PATH, "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/twilio/")
TOKEN_PREFIXES = ("/api/", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The shape of the CallSid the browser phone makes up (``CA`` + 32 hex digits).
BROWSER_CALL_SID = re.compile(r"CA[0-9a-f]{32}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSource:
    """The accepted API tokens: the inline list plus the file's lines, re-read when the file changes."""

    def __init__(self, inline: str | None, path: str | None) -> None:
        self._inline = tuple(t.strip() for t in (inline or "").split(",") if t.strip())
        self._path = Path(path) if path else None
        self._stamp: tuple[int, int, int] | None = None
        self._from_file: tuple[str, ...] = ()
        self._warned = False

    @property
    def configured(self) -> bool:
        """Whether any source of tokens is set (the file may still be empty)."""
        return bool(self._inline) or self._path is not None

    def current(self) -> tuple[str, ...]:
        """The tokens accepted now (a stat per call; the file is read only when it changed)."""
        return self._inline + self._file_tokens()

    def _file_tokens(self) -> tuple[str, ...]:
        if self._path is None:
            return ()
        try:
            info = self._path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp:
                text = self._path.read_text(encoding="utf-8")
                self._from_file = tuple(
                    line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
                )
                self._stamp = stamp
                self._warned = False
                log.info("API tokens file %s read: %d token(s)", self._path, len(self._from_file))
        except OSError as exc:
            if not self._warned:
                log.warning(
                    "cannot read VOICEFSM_API_TOKENS_FILE %s (%s); its tokens are not accepted until it is "
                    "readable again",
                    self._path,
                    exc.strerror or type(exc).__name__,
                )
                self._warned = True
            self._from_file, self._stamp = (), None
        return self._from_file

    def match(self, presented: str) -> str | None:
        """The accepted token equal to ``presented``; every token is compared, in constant time each."""
        found: str | None = None
        candidate = presented.encode()
        for token in self.current():
            if hmac.compare_digest(token.encode(), candidate):
                found = token
        return found


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: which token opened it (fingerprint), a nonce for its CSRF token, when."""

    fingerprint: str
    nonce: str
    issued_at: float


class AccessControl:
    """Checks credentials for one app; counts and logs every refusal (never the credential)."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.enabled = not settings.dev_mode
        self.tokens = TokenSource(
            settings.api_tokens.get_secret_value() if settings.api_tokens is not None else None,
            settings.api_tokens_file,
        )
        secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
        # Without VOICEFSM_SECRET_KEY, sessions last as long as this process (preflight says so).
        self._key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32)
        self.max_age_s = settings.session_max_age_s
        self.cookie_secure = settings.cookie_secure
        self._clock = clock
        self.failures = Counter(
            "voicefsm_auth_failures",
            "Requests refused for missing or wrong credentials, by kind (the credential is never kept)",
            ["kind"],
            registry=registry,
        )

    # -- tokens and sessions --------------------------------------------------------------------

    def _sign(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def fingerprint(self, token: str) -> str:
        return _b64(self._sign("token", token.encode())[:18])

    def new_session(self, token: str) -> str:
        """A signed cookie value for a browser that logged in with ``token``."""
        body = json.dumps(
            {"f": self.fingerprint(token), "n": secrets.token_urlsafe(12), "t": int(self._clock())},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._sign('session', body))}"

    def session(self, cookie: str | None) -> Session | None:
        """The session in ``cookie`` if it is signed by us, not too old, and its token is still valid."""
        if not cookie or "." not in cookie:
            return None
        body_part, _, mac_part = cookie.partition(".")
        try:
            body = _unb64(body_part)
            mac = _unb64(mac_part)
            if not hmac.compare_digest(mac, self._sign("session", body)):
                return None
            data = json.loads(body)
            session = Session(str(data["f"]), str(data["n"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        age = self._clock() - session.issued_at
        if age < -60 or age > self.max_age_s:
            return None
        live = {self.fingerprint(token) for token in self.tokens.current()}
        if not any(hmac.compare_digest(session.fingerprint, f) for f in live):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._sign("csrf", session.nonce.encode())[:24])

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token(session), presented)

    def refuse(self, kind: str, what: str) -> None:
        """Count and log a refusal: the path and the kind, never the credential or the caller."""
        self.failures.labels(kind=kind).inc()
        # No credential at all is what every visit before logging in looks like: counted, logged quietly.
        log.log(logging.INFO if kind == "missing" else logging.WARNING, "access refused (%s): %s", kind, what)

    # -- cookies --------------------------------------------------------------------------------

    def set_session_cookies(self, response: Response, token: str) -> None:
        value = self.new_session(token)
        session = self.session(value)
        assert session is not None  # just made from a valid token
        age = int(self.max_age_s)
        secure = self.cookie_secure
        response.set_cookie(
            SESSION_COOKIE, value, max_age=age, httponly=True, secure=secure, samesite="strict", path="/"
        )
        # Readable by the pages' script, which echoes it in X-CSRF-Token; useless to another site.
        response.set_cookie(
            CSRF_COOKIE,
            self.csrf_token(session),
            max_age=age,
            httponly=False,
            secure=secure,
            samesite="strict",
            path="/",
        )

    def clear_session_cookies(self, response: Response) -> None:
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.delete_cookie(
                name, path="/", secure=self.cookie_secure, httponly=True, samesite="strict"
            )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            cookies.setdefault(name, value)
    return cookies


def _same_origin(headers: dict[str, str]) -> bool:
    """A browser's WebSocket says where its page came from; it must be this host."""
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser: no ambient cookie was sent on a user's behalf
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.split(",")[0].strip().lower()


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _wants_token(path: str) -> bool:
    return path.startswith(TOKEN_PREFIXES) or path == "/metrics"


class AccessMiddleware:
    """ASGI middleware in front of every route; in dev mode it lets everything through."""

    def __init__(self, app: ASGIApp, control: AccessControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.control.enabled or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, _no_store(send) if kind == "http" else send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the client sees 403
        else:
            await refusal(scope, receive, send)

    def _check(self, scope: Scope) -> Response | None:
        control = self.control
        path: str = scope["path"]
        method: str = scope.get("method", "GET")
        headers = _headers(scope)
        what = f"{method if scope['type'] == 'http' else 'WS'} {path}"
        bearer = _bearer(headers)
        if bearer is not None:
            if control.tokens.match(bearer) is not None:
                return None
            control.refuse("bad_token", what)
            return _unauthorized("the API token is not valid (it may have been rotated out)")
        cookie = _cookies(headers).get(SESSION_COOKIE)
        session = control.session(cookie)
        if session is not None:
            if scope["type"] == "websocket":
                if _same_origin(headers):
                    return None
                control.refuse("cross_origin", what)
                return _forbidden("this WebSocket was opened from another site")
            if method in SAFE_METHODS or control.csrf_ok(session, headers.get(CSRF_HEADER)):
                return None
            control.refuse("csrf", what)
            return _forbidden(f"missing or wrong {CSRF_HEADER} header: reload the page and try again")
        control.refuse("expired_session" if cookie else "missing", what)
        if _wants_token(path) or method not in SAFE_METHODS or scope["type"] == "websocket":
            return _unauthorized("log in, or send Authorization: Bearer <one of VOICEFSM_API_TOKENS>")
        target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


def _no_store(send: Send) -> Send:
    """What a login opened must not outlive it in the browser's cache (pages, API answers, recordings)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
            message["headers"] = [*headers, (b"cache-control", b"no-store")]
        await send(message)

    return sending


def _unauthorized(detail: str) -> Response:
    return Response(
        json.dumps({"detail": detail}),
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="voicefsm"'},
    )


def _forbidden(detail: str) -> Response:
    return Response(json.dumps({"detail": detail}), status_code=403, media_type="application/json")


def access_control(request: Request | WebSocket) -> AccessControl:
    control: AccessControl = request.app.state.voicefsm_access
    return control


def browser_may_stream(websocket: WebSocket) -> bool:
    """A logged-in page of this site may open the media stream (the browser phone), like Twilio does."""
    control: AccessControl | None = getattr(websocket.app.state, "voicefsm_access", None)
    if control is None or not control.enabled:
        return False
    headers = {k.lower(): v for k, v in websocket.headers.items()}
    session = control.session(websocket.cookies.get(SESSION_COOKIE))
    return session is not None and headers.get("origin") is not None and _same_origin(headers)


# -- the login page and the browser phone's stream ticket -----------------------------------------

router = APIRouter(include_in_schema=False)

LOGIN_PAGE = files("voicefsm.server") / "static" / "login.html"


def _local_target(target: str | None) -> str:
    """Only a path on this site: never ``//elsewhere`` or ``https://elsewhere``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(control: AccessControl, target: str, error: str | None, status: int) -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    page = (
        LOGIN_PAGE.read_text(encoding="utf-8")
        .replace("{{csrf}}", nonce)
        .replace("{{next}}", html.escape(target, quote=True))
        .replace("{{error}}", html.escape(error) if error else "")
        .replace("{{error_hidden}}", "" if error else "hidden")
    )
    response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        secure=control.cookie_secure,
        samesite="strict",
        path=LOGIN_PATH,
    )
    return response


@router.get(LOGIN_PATH)
async def login_form(request: Request, next: str = "/") -> Response:
    """The login page: one of the API tokens is the password."""
    control = access_control(request)
    if not control.enabled:
        return RedirectResponse(_local_target(next), status_code=303)
    return _login_page(control, _local_target(next), None, 200)


@router.post(LOGIN_PATH)
async def login(request: Request) -> Response:
    """Check the token typed in; on success set the session and CSRF cookies and go where asked."""
    control = access_control(request)
    form = await request.form()
    target = _local_target(str(form.get("next") or "/"))
    if not control.enabled:
        return RedirectResponse(target, status_code=303)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    presented = str(form.get("csrf") or "")
    if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
        control.refuse("csrf", f"POST {LOGIN_PATH}")
        return _login_page(control, target, "The form expired. Please try again.", 403)
    token = control.tokens.match(str(form.get("token") or ""))
    if token is None:
        control.refuse("login", f"POST {LOGIN_PATH}")
        limits = limits_of(request.app.state)
        if limits is not None:  # VOICEFSM_LOGIN_ATTEMPTS_PER_MINUTE failures, then 429 (server/limits.py)
            limits.login_failed(str(request.scope.get("state", {}).get("voicefsm_client", "unknown")))
        return _login_page(control, target, "That token is not valid.", 401)
    log.info("a browser logged in")
    response = RedirectResponse(target, status_code=303)
    control.set_session_cookies(response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post(LOGOUT_PATH)
async def logout(request: Request) -> Response:
    """End this browser's session (the middleware has checked its CSRF header)."""
    control = access_control(request)
    response = Response(status_code=204)
    control.clear_session_cookies(response)
    return response


class StreamTicketRequest(BaseModel):
    """The browser phone asks for a ticket for the call it is about to place."""

    call_sid: str = Field(pattern=BROWSER_CALL_SID.pattern, max_length=34)


@router.post("/api/phone/ticket")
async def stream_ticket(request: Request, body: StreamTicketRequest) -> dict[str, str]:
    """A single-use token for the browser phone's media stream, as the voice webhook gives Twilio."""
    state = request.app.state.voicefsm
    if state.draining:
        raise HTTPException(503, "the server is shutting down; try again in a minute")
    if await state.registry.is_taken(body.call_sid):  # never hand out another call's ticket
        raise HTTPException(409, "that call id is in use; the browser phone makes a new one for each call")
    registry = state.registry
    if len(registry.active) + await registry.outstanding() >= state.settings.max_concurrent_calls:
        raise HTTPException(503, "all lines are busy (VOICEFSM_MAX_CONCURRENT_CALLS); try again in a minute")
    return {"token": await state.registry.issue_token(body.call_sid, "browser")}


def install_access_control(app: FastAPI, settings: Settings, registry: CollectorRegistry) -> AccessControl:
    """Put the access checks in front of ``app`` and add the login routes; returns the checker."""
    control = AccessControl(settings, registry)
    app.state.voicefsm_access = control
    app.include_router(router)
    app.add_middleware(AccessMiddleware, control=control)
    if control.enabled and not control.tokens.configured:
        log.warning(
            "no VOICEFSM_API_TOKENS or VOICEFSM_API_TOKENS_FILE: the API, the pages and /metrics refuse "
            "everyone; set one to use them"
        )
    return control
