"""Input limits in front of every route: body sizes, request rates, login attempts, client addresses.

- **Body size**: ``/twilio/*`` bodies may be ``VOICEFSM_MAX_WEBHOOK_BYTES`` (64 KiB), everything else
  ``VOICEFSM_MAX_REQUEST_BYTES`` (2 MiB). A declared ``Content-Length`` over the limit gets 413 before a
  byte is read; a chunked body is kept up to the limit and gets 413 the moment it passes it (the
  rest, up to 1 MiB or 1 s, is read and thrown away so the client can read the answer).
- **Rates**: ``/twilio/*`` and ``/api/*`` requests pass a token bucket per client address
  (``VOICEFSM_RATE_LIMIT_PER_IP`` per second, bursts of twice that; none for loopback, which is this
  host or an undeclared local proxy) and one for all clients together (``VOICEFSM_RATE_LIMIT_GLOBAL``);
  over either, 429 with ``Retry-After``. WebSocket upgrades of the
  media stream are not rate limited (each follows a rate-limited, signed webhook and needs its ticket).
- **Logins**: a client address gets ``VOICEFSM_LOGIN_ATTEMPTS_PER_MINUTE`` failed logins a minute;
  then ``POST /login`` answers 429 with ``Retry-After`` without checking the token.
- **Client address**: the socket's peer. ``X-Forwarded-For`` is believed only when the peer is one of
  ``VOICEFSM_TRUSTED_PROXIES``; then the client is the right-most address in it that is not a trusted
  proxy (the left-most entries are whatever the client wrote). uvicorn's own proxy-header handling is
  turned off (``serving.server_config``), so nothing else rewrites the peer.

WebSocket messages are capped by the server (``serving.WS_MAX_SIZE``): a larger frame closes the
socket with 1009 before it is read whole, let alone parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from voicefsm.core.rates import TokenBuckets
from voicefsm.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WEBHOOK_PREFIX = "/twilio/"
LIMITED_PREFIXES = ("/twilio/", "/api/")
LOGIN_PATH = "/login"
#: How much of a refused chunked body is read and thrown away so the client gets to read the 413.
DISCARD_BYTES = 1024 * 1024
#: ... and for how long at most (a client may also stop sending and wait for the answer).
DISCARD_WAIT_S = 1.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """``VOICEFSM_TRUSTED_PROXIES`` as networks; raises ValueError naming the entry that is not one."""
    networks: list[Network] = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as error:
            raise ValueError(
                f"VOICEFSM_TRUSTED_PROXIES: {entry!r} is not an address or network; "
                "write e.g. 127.0.0.1,10.0.0.0/8"
            ) from error
    return tuple(networks)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """Who is asking: the peer, or (behind a trusted proxy) the last untrusted hop of X-Forwarded-For."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded: list[str] = [
        value.decode("latin-1")
        for key, value in scope.get("headers", [])
        if key.lower() == b"x-forwarded-for"
    ]
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


class Limits:
    """One app's limits and their counters (``voicefsm_requests_limited_total{reason}``)."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trusted = parse_networks(settings.trusted_proxies)
        self.max_request_bytes = settings.max_request_bytes
        self.max_webhook_bytes = settings.max_webhook_bytes
        self.per_ip = TokenBuckets(settings.rate_limit_per_ip, 2 * settings.rate_limit_per_ip, clock=clock)
        self.everyone = TokenBuckets(settings.rate_limit_global, 2 * settings.rate_limit_global, clock=clock)
        per_minute = settings.login_attempts_per_minute
        self.logins = TokenBuckets(per_minute / 60.0, per_minute, clock=clock)
        self.limited = Counter(
            "voicefsm_requests_limited",
            "Requests refused by an input limit, by reason (body_too_large, rate_per_ip, rate_global, login)",
            ["reason"],
            registry=registry,
        )

    def body_limit(self, path: str) -> int:
        return self.max_webhook_bytes if path.startswith(WEBHOOK_PREFIX) else self.max_request_bytes

    def rate_wait(self, client: str) -> tuple[str, float] | None:
        """None when the request may go on, else (reason, seconds to wait).

        A loopback client has no bucket of its own: it is this host (a local proxy not declared in
        VOICEFSM_TRUSTED_PROXIES speaks for everyone behind it); the global limit still applies.
        """
        wait = 0.0 if _in(client, LOOPBACK) else self.per_ip.take(client)
        if wait > 0:
            return "rate_per_ip", wait
        wait = self.everyone.take()
        if wait > 0:
            return "rate_global", wait
        return None

    def login_wait(self, client: str) -> float:
        """Seconds before ``client`` may try another login (0.0: now)."""
        return self.logins.available(client)

    def login_failed(self, client: str) -> None:
        """Spend one of ``client``'s login attempts."""
        self.logins.take(client)


def _refusal(status: int, detail: str, retry_after_s: float | None = None) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after_s))).encode()))
    headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def _send_refusal(send: Send, status: int, detail: str, retry_after_s: float | None = None) -> None:
    start, body = _refusal(status, detail, retry_after_s)
    await send(start)
    await send(body)


class LimitsMiddleware:
    """ASGI middleware applying :class:`Limits` before anything else reads the request."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        path: str = scope["path"]
        client = client_address(scope, limits.trusted)
        scope.setdefault("state", {})["voicefsm_client"] = client
        if path.startswith(LIMITED_PREFIXES):
            refused = limits.rate_wait(client)
            if refused is not None:
                reason, wait = refused
                limits.limited.labels(reason=reason).inc()
                who = "this address" if reason == "rate_per_ip" else "this server"
                await _send_refusal(send, 429, f"too many requests to {who}; retry after the delay", wait)
                return
        if scope.get("method") == "POST" and path == LOGIN_PATH:
            wait = limits.login_wait(client)
            if wait > 0:
                limits.limited.labels(reason="login").inc()
                await _send_refusal(
                    send, 429, "too many failed logins from this address; wait a minute and try again", wait
                )
                return
        limit = limits.body_limit(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            limits.limited.labels(reason="body_too_large").inc()
            await _send_refusal(
                send, 413, f"the request body is {declared} bytes; at most {limit} are accepted"
            )
            return
        if declared is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            # Chunked (no Content-Length): read it here up to the limit, then hand it on.
            body = await _read_at_most(receive, limit)
            if body is None:
                limits.limited.labels(reason="body_too_large").inc()
                # Discard (never keep) a bounded rest first, so a client still sending reads the 413
                # rather than a connection reset; one that stops or sends more is answered after that.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DISCARD_WAIT_S):
                        await _discard(receive, DISCARD_BYTES)
                await _send_refusal(send, 413, f"the request body is over the {limit} bytes accepted")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body if it is at most ``limit`` bytes; None as soon as it is over (the rest unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; the app will see an empty or short body
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _discard(receive: Receive, at_most: int) -> None:
    seen = 0
    while seen <= at_most:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_limits(app: Any, settings: Settings, registry: CollectorRegistry) -> Limits:
    """Put the limits in front of ``app`` (outermost: before access control reads anything)."""
    limits = Limits(settings, registry)
    app.state.voicefsm_limits = limits
    app.add_middleware(LimitsMiddleware, limits=limits)
    return limits


def limits_of(app_state: object) -> Limits | None:
    """The app's :class:`Limits` (None for an app built without them)."""
    limits: Limits | None = getattr(app_state, "voicefsm_limits", None)
    return limits
