"""Twilio's three entry points: the voice webhook, the media stream, and call status callbacks.

The media stream (Twilio's, or the browser phone's, which speaks the same protocol) is read
through the Twilio adapter (:mod:`voicefsm.telephony.twilio`) as neutral call events and run
by the one driver in a session the server's services open.

When a Twilio auth token is configured, every request must carry a valid
``X-Twilio-Signature`` computed over the configured public URL (not the Host header,
which proxies rewrite); anything else gets 403 before any work is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping

from fastapi import APIRouter, Request, Response, WebSocket
from starlette.datastructures import FormData

from voicefsm.core.events import CallStarted
from voicefsm.core.identifiers import InvalidIdentifier, check_parameters, check_sid
from voicefsm.runtime.driver import run_call, wait_for_start
from voicefsm.runtime.session import CallSession
from voicefsm.runtime.snapshot import RESUME_PARAMETER, Verdict
from voicefsm.server.amd import deliver_verdict
from voicefsm.server.auth import browser_may_stream
from voicefsm.server.campaign_calls import campaign_parameters
from voicefsm.server.registry import Admission, StreamRejected
from voicefsm.server.state import ServerState
from voicefsm.settings import STREAM_PATH
from voicefsm.telephony.twilio.rest import status_callback_url
from voicefsm.telephony.twilio.signature import is_valid_signature_any, webhook_url
from voicefsm.telephony.twilio.stream import TwilioMediaStream
from voicefsm.telephony.twilio.twiml import busy_twiml, hangup_twiml, stream_twiml

log = logging.getLogger(__name__)

router = APIRouter(prefix="/twilio", tags=["twilio"])

XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
#: Twilio's shared-key (HMAC-SHA256) signing, used when a Webhooks Rule matches; not supported here.
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
IDEMPOTENCY_HEADER = "i-twilio-idempotency-token"
#: The SID fields of Twilio's webhooks and callbacks, checked by shape when present.
SID_FIELDS = {
    "CallSid": "CallSid",
    "ParentCallSid": "CallSid",
    "AccountSid": "AccountSid",
    "StreamSid": "StreamSid",
    "MessageSid": "MessageSid",
    "SmsSid": "MessageSid",
}
ENDED_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
#: The outcome recorded for a call Twilio ended before its stream started.
OUTCOME_BEFORE_STREAM = {"completed": "hung_up", "no-answer": "no_answer"}
UNAVAILABLE_MESSAGE = "Sorry, we cannot take your call right now. Please call again in a few minutes."
REPLAY_TTL_S = 120.0
MAX_REPLAYS = 10_000


def _state(request: Request | WebSocket) -> ServerState:
    state: ServerState = request.app.state.voicefsm
    return state


def _signed_url(state: ServerState, request: Request) -> str | None:
    base = state.settings.public_base_url()
    if base is None:
        return None
    return webhook_url(base, request.url.path, request.url.query)


def _refuse(state: ServerState, request: Request, status: int, problem: str) -> Response:
    state.metrics.request_rejected()
    log.warning("rejected %s: %s", request.url.path, problem)
    return Response(problem, status_code=status, media_type="text/plain")


async def _verified_form(request: Request) -> FormData | Response:
    """The webhook's form, or the refusal to answer with (415, 403 or 400) when it does not check out.

    In order: the body must be a form (415, before it is read); a shared-key signature
    (``X-Twilio-Webhooks-Signature-Settings``) is refused explicitly (403); with a Twilio auth token,
    ``X-Twilio-Signature`` must be Twilio's for the public URL (403); every SID in it must have
    Twilio's shape (400). Nothing is done for a refused request.
    """
    state = _state(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        return _refuse(
            state, request, 415, f"a Twilio webhook is {FORM}, not {content_type or 'an unlabelled body'}"
        )
    if SIGNATURE_SETTINGS_HEADER in request.headers:
        return _refuse(
            state,
            request,
            403,
            "webhooks signed with a shared key (X-Twilio-Webhooks-Signature-Settings, HMAC-SHA256) are not "
            "accepted; remove the Webhooks Rule so Twilio signs with the auth token",
        )
    form = await request.form()
    tokens = state.settings.auth_tokens
    if tokens:
        url = _signed_url(state, request)
        signature = request.headers.get("x-twilio-signature")
        if url is None or not is_valid_signature_any(tokens, url, form, signature):
            return _refuse(state, request, 403, "invalid Twilio signature")
    for name, kind in SID_FIELDS.items():
        value = form.get(name)
        if value is None or value == "":
            continue
        try:
            check_sid(kind, str(value))
        except InvalidIdentifier as error:
            return _refuse(state, request, 400, str(error) if name == kind else f"{name}: {error}")
    return form


def _stream_url(state: ServerState, request: Request) -> str:
    configured = state.settings.stream_url()
    if configured is not None:
        return configured
    # Dev mode without a public URL: point the stream back at whoever called us (a local fake or browser).
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}{STREAM_PATH}"


class WebhookReplies:
    """The TwiML answered per ``I-Twilio-Idempotency-Token``: Twilio's retry of a webhook gets it again."""

    def __init__(self, ttl_s: float = REPLAY_TTL_S, capacity: int = MAX_REPLAYS) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._replies: OrderedDict[str, tuple[float, str]] = OrderedDict()
        # Retries that arrive while the first is still being answered wait for its answer.
        self._answering: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: str | None) -> AsyncIterator[None]:
        """Answer the webhooks with ``key`` one after another, so a retry finds the first one's reply."""
        if not key:
            yield
            return
        lock, waiting = self._answering.get(key, (asyncio.Lock(), 0))
        self._answering[key] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._answering[key]
            if waiting == 1:
                del self._answering[key]
            else:
                self._answering[key] = (lock, waiting - 1)

    def get(self, key: str | None) -> str | None:
        if not key:
            return None
        found = self._replies.get(key)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]

    def put(self, key: str | None, twiml: str) -> None:
        if not key:
            return
        self._replies[key] = (time.monotonic() + self._ttl_s, twiml)
        self._replies.move_to_end(key)
        while len(self._replies) > self._capacity:
            self._replies.popitem(last=False)


def _replies(request: Request) -> WebhookReplies:
    replies: WebhookReplies | None = getattr(request.app.state, "voicefsm_webhook_replies", None)
    if replies is None:
        replies = WebhookReplies()
        request.app.state.voicefsm_webhook_replies = replies
    return replies


async def _at_capacity(state: ServerState) -> bool:
    """Live calls plus answered calls whose stream is on its way fill every line."""
    registry = state.registry
    return len(registry.active) + await registry.outstanding() >= state.settings.max_concurrent_calls


@router.post("/voice")
async def voice_webhook(request: Request) -> Response:
    """Answer an incoming (or outbound, once answered) call with TwiML that opens the media stream.

    A retry of the same webhook (same ``I-Twilio-Idempotency-Token``) gets the same TwiML. Twilio's
    redirect after a lost stream resumes the call (or hangs up if its flow ended). Draining, or every
    line taken (live calls and answered ones whose stream is on its way), a new caller hears a polite
    busy message.
    """
    state = _state(request)
    form = await _verified_form(request)
    if isinstance(form, Response):
        return form
    replies = _replies(request)
    idempotency = request.headers.get(IDEMPOTENCY_HEADER)
    async with replies.one_at_a_time(idempotency):
        replayed = replies.get(idempotency)
        if replayed is not None:
            return Response(replayed, media_type=XML)
        return await _answer_call(state, request, form, replies, idempotency)


async def _answer_call(
    state: ServerState, request: Request, form: FormData, replies: WebhookReplies, idempotency: str | None
) -> Response:
    """The voice webhook's TwiML for a call: a stream (new or resumed), busy, or hang up."""
    given = form.get("CallSid")
    if not given and not state.settings.dev_mode:
        return _refuse(state, request, 400, "CallSid is missing; Twilio sends one with every call")
    call_sid = str(given or f"CA{secrets.token_hex(16)}")
    try:
        # What the database says (a call to resume? a free line? a campaign's row? the stream's ticket)
        # must come in time: Twilio waits 15 s at most, and a caller hears silence meanwhile.
        async with asyncio.timeout(state.settings.webhook_deadline_s):
            resume = await _resume_verdict(state, call_sid, str(form.get("CallStatus") or ""))
            if resume == "ended":  # Twilio's redirect after a flow that ended: nothing more to say
                return Response(hangup_twiml(), media_type=XML)
            # A call coming back after a lost stream had its line already; anyone else needs a free one.
            if (
                resume != "resume"
                and not await state.registry.has_ticket(call_sid)
                and (state.draining or await _at_capacity(state))
            ):
                return Response(
                    busy_twiml("Sorry, all our lines are busy. Please call again shortly."), media_type=XML
                )
            campaign = await campaign_parameters(request)  # a campaign call: its CSV row, from the database
            caller = form.get("From")
            token = await state.registry.issue_token(call_sid, str(caller) if caller else None)
    except TimeoutError:
        log.warning(
            "call %s: the database did not answer the webhook within %g s (VOICEFSM_WEBHOOK_DEADLINE_S); "
            "the caller is told to call again",
            call_sid,
            state.settings.webhook_deadline_s,
        )
        return Response(hangup_twiml(UNAVAILABLE_MESSAGE), media_type=XML)
    stream_url = _stream_url(state, request)
    parameters = {**campaign, "token": token}
    if resume == "resume":
        parameters[RESUME_PARAMETER] = "1"
        await _lost_stream_closed(state, call_sid)
    redirect = _voice_url(state, request) if resume is not None else None
    twiml = stream_twiml(
        stream_url,
        parameters,
        status_callback=status_callback_url(state.settings),  # the stream's events: /twilio/status
        allow_insecure=state.settings.dev_mode,
        redirect=redirect,
    )
    replies.put(idempotency, twiml)
    return Response(twiml, media_type=XML)


async def _resume_verdict(state: ServerState, call_sid: str, status: str) -> Verdict | None:
    """resume (the call's flow has a snapshot), ended (its flow ended), new; None: calls cannot resume.

    When the database cannot answer, an inbound call still ringing is new (Twilio's first request);
    anything else may be the redirect after a flow that ended, which must not start the flow again.
    """
    snapshots = state.services.snapshots
    if snapshots is None:
        return None
    try:
        return await snapshots.verdict(call_sid)
    except Exception:
        log.exception("could not look up whether call %s can resume (its status: %s)", call_sid, status)
        return "new" if status == "ringing" else "ended"


#: How long the webhook waits for the lost stream's session on this worker to close before resuming.
LOST_STREAM_CLOSE_S = 5.0


async def _lost_stream_closed(state: ServerState, call_sid: str) -> None:
    """Let the lost stream's session on this worker finish closing (bounded): its last records first,
    and the resumed stream is not refused as a second stream of a live call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOST_STREAM_CLOSE_S
    # The registry has no per-call event (its `idle` is for all calls); a resume is rare, so poll.
    while call_sid in state.registry.active and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _voice_url(state: ServerState, request: Request) -> str:
    """This webhook's absolute URL, where Twilio goes when a stream closes without the call ending."""
    base = state.settings.public_base_url() or f"{request.url.scheme}://{request.url.netloc}"
    return f"{base.rstrip('/')}{router.prefix}/voice"


@router.post("/status")
async def status_callback(request: Request) -> Response:
    """Twilio's status callbacks: a call's (ringing ... completed, busy, no-answer, failed, canceled),
    its media stream's (stream-started, stream-stopped, stream-error), a transfer's or an SMS's.

    A call Twilio says has ended is reconciled with the records: a live call here is ended (its
    session closes its record); a call answered here whose stream never started gets a record with
    Twilio's outcome and its ticket is withdrawn. An unknown CallSid, a repeat or a late callback
    changes nothing: a call's state only moves forward.
    """
    state = _state(request)
    form = await _verified_form(request)
    if isinstance(form, Response):
        return form
    fields: Mapping[str, str] = {key: str(value) for key, value in form.items()}
    call_sid = fields.get("CallSid", "")
    status = fields.get("CallStatus", "")
    if status:
        log.info("call %s status %s", call_sid or "?", status)
        await reconcile_call_status(state, fields)
    elif fields.get("StreamEvent"):
        log.info("call %s stream %s", call_sid or "?", fields["StreamEvent"])
    elif fields.get("MessageStatus"):
        log.info("message %s status %s", fields.get("MessageSid", "?"), fields["MessageStatus"])
    deliver_verdict(state.registry, fields)  # an async AMD verdict (`voicefsm call --amd`) for a live call
    if state.services.on_status is not None:
        try:
            await state.services.on_status(fields)
        except Exception:
            log.exception("the status hook failed")
    return Response(status_code=204)


async def reconcile_call_status(state: ServerState, fields: Mapping[str, str]) -> None:
    """Bring the call's record in line with a (verified) status callback's ``CallStatus``.

    Only an end moves anything: a live call is asked to end, an answered call whose stream never
    started gets its record. Earlier statuses, repeats and unknown calls change nothing.
    """
    call_sid = fields.get("CallSid", "")
    status = fields.get("CallStatus", "")
    if call_sid and status in ENDED_STATUSES:
        await _call_ended_at_twilio(state, call_sid, status)


async def _call_ended_at_twilio(state: ServerState, call_sid: str, status: str) -> None:
    call = state.registry.active.get(call_sid)
    if call is not None:
        call.request_disconnect(f"twilio: {status}")  # its session writes the record as it closes
        return
    answered = await state.registry.discard(call_sid)
    if answered is None:
        return  # not ours, already over, or a transfer's other leg: nothing to reconcile
    outcome = OUTCOME_BEFORE_STREAM.get(status, status.replace("-", "_"))
    log.info("call %s ended at Twilio (%s) before its media stream started", call_sid, status)
    if state.writer is not None:
        flow = str((state.flow_description or {}).get("name") or "-")
        state.writer.call_started(call_sid, flow=flow, caller=answered.caller)
        state.writer.call_ended(call_sid, outcome=outcome)
    state.metrics.calls.labels(outcome=outcome).inc()


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
    await websocket.accept()
    far_end = TwilioMediaStream(websocket)
    try:
        await _run_stream(state, far_end)
    finally:
        state.metrics.stream_dropped(far_end.dropped)  # faults: dropped frames counted in /metrics


async def _run_stream(state: ServerState, far_end: TwilioMediaStream) -> None:
    limits = state.services.limits
    started = await wait_for_start(far_end, limits.start_timeout_s)
    if started is None:
        await far_end.close("no start")
        return
    try:
        started = _checked_start(started, far_end.stream_sid)
    except InvalidIdentifier as exc:
        state.metrics.request_rejected()
        log.warning("refused a media stream: %s", exc)
        await far_end.refuse("malformed start")
        return
    if "token" not in started.parameters and (state.draining or await _at_capacity(state)):
        # Only a call the webhook answered (its ticket reserved a line, before any drain) may start now.
        state.metrics.request_rejected()
        why = "the server is draining" if state.draining else "all lines are busy"
        log.warning("refused a media stream without a ticket: %s", why)
        with contextlib.suppress(Exception):
            await far_end.websocket.close(code=1013, reason="try again later")
        return
    try:
        admission = await state.registry.admit(started)
    except StreamRejected as exc:
        state.metrics.request_rejected()
        log.warning("refused a media stream: %s", exc)
        await far_end.refuse("stream refused")
        return
    await run_call(
        far_end, lambda admitted: _session(state, admitted), limits, started=_admitted(started, admission)
    )


def _checked_start(started: CallStarted, stream_sid: str | None) -> CallStarted:
    """The ``start`` if its CallSid, StreamSid and custom parameters have their shapes (else raise)."""
    check_sid("CallSid", started.call_id)
    check_sid("StreamSid", stream_sid or "")
    return dataclasses.replace(started, parameters=check_parameters(started.parameters))


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
