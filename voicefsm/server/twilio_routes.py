"""Twilio's three entry points: the voice webhook, the media stream, and call status callbacks.

The media stream (Twilio's, or the browser phone's, which speaks the same protocol) is read
through the Twilio adapter (:mod:`voicefsm.telephony.twilio`) as neutral call events and run
by the one driver in a session the server's services open.

When a Twilio auth token is configured, every request must carry a valid
``X-Twilio-Signature`` computed over the configured public URL (not the Host header,
which proxies rewrite); anything else gets 403 before any work is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Mapping

from fastapi import APIRouter, Request, Response, WebSocket
from starlette.datastructures import FormData

from voicefsm.core.events import CallStarted
from voicefsm.runtime.driver import run_call, wait_for_start
from voicefsm.runtime.session import CallSession
from voicefsm.server.amd import deliver_verdict
from voicefsm.server.auth import browser_may_stream
from voicefsm.server.campaign_calls import campaign_parameters
from voicefsm.server.registry import Admission, StreamRejected
from voicefsm.server.state import ServerState
from voicefsm.settings import STREAM_PATH
from voicefsm.telephony.twilio.signature import is_valid_signature_any, webhook_url
from voicefsm.telephony.twilio.stream import TwilioMediaStream
from voicefsm.telephony.twilio.twiml import busy_twiml, stream_twiml

log = logging.getLogger(__name__)

router = APIRouter(prefix="/twilio", tags=["twilio"])

XML = "application/xml"


def _state(request: Request | WebSocket) -> ServerState:
    state: ServerState = request.app.state.voicefsm
    return state


def _signed_url(state: ServerState, request: Request) -> str | None:
    base = state.settings.public_base_url()
    if base is None:
        return None
    return webhook_url(base, request.url.path, request.url.query)


async def _verified_form(request: Request) -> FormData | Response:
    """The webhook's form, or a 403 response when its signature does not check out."""
    state = _state(request)
    form = await request.form()
    tokens = state.settings.auth_tokens
    if not tokens:
        return form
    url = _signed_url(state, request)
    signature = request.headers.get("x-twilio-signature")
    if url is None or not is_valid_signature_any(tokens, url, form, signature):
        state.metrics.request_rejected()
        log.warning("rejected %s: missing or invalid X-Twilio-Signature", request.url.path)
        return Response("invalid Twilio signature", status_code=403)
    return form


def _stream_url(state: ServerState, request: Request) -> str:
    configured = state.settings.stream_url()
    if configured is not None:
        return configured
    # Dev mode without a public URL: point the stream back at whoever called us (a local fake or browser).
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}{STREAM_PATH}"


@router.post("/voice")
async def voice_webhook(request: Request) -> Response:
    """Answer an incoming (or outbound, once answered) call with TwiML that opens the media stream."""
    state = _state(request)
    form = await _verified_form(request)
    if isinstance(form, Response):
        return form
    if state.draining or len(state.registry.active) >= state.settings.max_concurrent_calls:
        return Response(
            busy_twiml("Sorry, all our lines are busy. Please call again shortly."), media_type=XML
        )
    call_sid = str(form.get("CallSid") or f"CA{secrets.token_hex(16)}")
    caller = form.get("From")
    token = state.registry.issue_token(call_sid, str(caller) if caller else None)
    stream_url = _stream_url(state, request)
    parameters = {**await campaign_parameters(request), "token": token}  # a campaign call: its CSV row
    twiml = stream_twiml(stream_url, parameters, allow_insecure=state.settings.dev_mode)
    return Response(twiml, media_type=XML)


@router.post("/status")
async def status_callback(request: Request) -> Response:
    """Record a call status callback (ringing, answered, completed, busy, no-answer ...)."""
    state = _state(request)
    form = await _verified_form(request)
    if isinstance(form, Response):
        return form
    fields: Mapping[str, str] = {key: str(value) for key, value in form.items()}
    log.info("call %s status %s", fields.get("CallSid", "?"), fields.get("CallStatus", "?"))
    deliver_verdict(state.registry, fields)  # an async AMD verdict (`voicefsm call --amd`) for a live call
    if state.services.on_status is not None:
        try:
            await state.services.on_status(fields)
        except Exception:
            log.exception("the status hook failed")
    return Response(status_code=204)


def _websocket_signature_ok(state: ServerState, websocket: WebSocket) -> bool:
    tokens = state.settings.auth_tokens
    if not tokens or browser_may_stream(websocket):  # a logged-in browser phone of this site
        return True
    url = state.settings.stream_url()
    signature = websocket.headers.get("x-twilio-signature")
    return url is not None and is_valid_signature_any(tokens, url, {}, signature)


@router.websocket("/stream")
async def media_stream(websocket: WebSocket) -> None:
    """One Twilio Media Stream (or browser phone) = one call, run by the driver from start to teardown."""
    state = _state(websocket)
    if not _websocket_signature_ok(state, websocket):
        state.metrics.request_rejected()
        log.warning("rejected a media stream: missing or invalid X-Twilio-Signature")
        await websocket.close(code=1008)  # before accept: the client sees HTTP 403
        return
    if state.draining:
        await websocket.close(code=1013)
        return
    await websocket.accept()
    far_end = TwilioMediaStream(websocket)
    limits = state.services.limits
    started = await wait_for_start(far_end, limits.start_timeout_s)
    if started is None:
        await far_end.close("no start")
        return
    try:
        admission = state.registry.admit(started)
    except StreamRejected as exc:
        state.metrics.request_rejected()
        log.warning("refused a media stream: %s", exc)
        await far_end.refuse("stream refused")
        return
    await run_call(
        far_end, lambda admitted: _session(state, admitted), limits, started=_admitted(started, admission)
    )


def _admitted(started: CallStarted, admission: Admission) -> CallStarted:
    """The start as the call sees it: the signed webhook's caller first, the stream token gone."""
    parameters = {key: value for key, value in started.parameters.items() if key != "token"}
    return dataclasses.replace(started, caller=admission.caller or started.caller, parameters=parameters)


@contextlib.asynccontextmanager
async def _session(state: ServerState, started: CallStarted) -> AsyncIterator[CallSession]:
    """The services' session for an admitted call, counted and registered while it is open."""
    call = None
    state.metrics.call_started()
    try:
        async with state.services.session(started) as session:
            call = session.call
            state.registry.add(call)
            yield session
    finally:
        # Last, so that a server waiting for its calls to end also waits for their records and recordings.
        if call is not None:
            state.registry.remove(call)
        state.metrics.call_ended(call.disconnect_reason or "ended" if call is not None else "no session")
