"""Call control and SMS through Twilio's REST API: the production :class:`TelephonyActions`.

The twilio SDK is blocking (``requests``), so every request runs in a worker thread with two
deadlines: the HTTP client's own socket timeout and an ``asyncio.timeout`` around the thread.
Every failure, HTTP or network, surfaces as :class:`~voicefsm.errors.TelephonyError`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from voicefsm.core.actions import OutboundCall
from voicefsm.errors import TelephonyError
from voicefsm.telephony.twilio.signature import webhook_url

if TYPE_CHECKING:
    from voicefsm.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
MAX_TWIML_CHARS = 4000  # Twilio rejects a longer Twiml parameter
_GRACE_S = 1.0  # the asyncio deadline sits just behind the socket timeout, which should fire first
_ALREADY_ENDED_CODES = frozenset({20404, 21220})  # not found; "call is not in a state to be updated"
_PHONE_NUMBER = re.compile(r"(?<!\w)\+?\d{7,15}(?!\w)")
_SDK_PREFIX = re.compile(r"^Unable to \w+ records?:?\s*")
# The SDK falls back to os.environ when given an empty mapping; settings are always passed explicitly.
_NO_ENVIRONMENT = {"VOICEFSM": "twilio settings are passed explicitly"}


def status_callback_url(settings: Settings) -> str | None:
    """The public ``/twilio/status`` URL of this server, or None without a public URL (dev mode)."""
    base = settings.public_base_url()
    if not base:
        return None
    try:
        return webhook_url(base, "/twilio/status")
    except ValueError:
        return None  # not an http(s) URL: preflight refuses it with the fix


def mask_number(number: str) -> str:
    """``+15551230001`` -> ``***0001``: enough to tell calls apart in logs, not enough to dial."""
    return "***" + number[-4:] if len(number) > 4 else "***"


def mask_numbers(text: str) -> str:
    """Mask every phone-number-like run of digits in ``text`` (Twilio's messages quote numbers)."""
    return _PHONE_NUMBER.sub(lambda match: mask_number(match.group()), text)


def check_twiml(action: str, twiml: str) -> None:
    """Raise TelephonyError for TwiML Twilio would refuse for its length, before sending it."""
    if len(twiml) > MAX_TWIML_CHARS:
        raise TelephonyError(
            action,
            f"the TwiML is {len(twiml)} characters and Twilio accepts at most {MAX_TWIML_CHARS}; "
            "shorten it or serve it from a URL",
        )


def _dial_twiml(number: str, *, say: str | None = None, status_callback: str | None = None) -> str:
    """TwiML that optionally says ``say`` and then dials ``number`` (a phone number or ``sip:`` URI).

    With ``status_callback``, Twilio reports the dialed leg's progress there.
    """
    response = VoiceResponse()
    if say:
        response.say(say)
    dial = response.dial()
    events = " ".join(STATUS_CALLBACK_EVENTS) if status_callback else None
    if number.startswith("sip:"):
        dial.sip(number, status_callback=status_callback, status_callback_event=events)
    else:
        dial.number(number, status_callback=status_callback, status_callback_event=events)
    return str(response.to_xml(xml_declaration=False))


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # the Twilio SDK is untyped
    """Sends every request, whatever its Twilio domain, to ``base`` (scheme, host, optional path prefix)."""

    def __init__(self, base: str, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_base must look like http://127.0.0.1:8080 or https://host, got {base!r}")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        parts = urlsplit(url)
        rebased = urlunsplit((self._scheme, self._netloc, self._prefix + parts.path, parts.query, ""))
        return super().request(method, rebased, params, data, headers, auth, timeout, allow_redirects)


class HangupLedger:
    """Makes hangup at-most-once per call sid, and a no-op for a call that was transferred.

    Concurrent hangups of one call share one request (the others wait for it). A hangup that
    failed (timeout, 429, 5xx) is not remembered, so calling again retries; one that found the
    call already ended (HTTP 404) counts as done. Remembers the most recent ``capacity`` calls.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._settled: OrderedDict[str, str] = OrderedDict()  # call sid -> "hung up" | "transferred"
        self._locks: dict[str, asyncio.Lock] = {}

    def settled(self, call_sid: str) -> str | None:
        """Why hangup of ``call_sid`` is now a no-op ("hung up" or "transferred"), or None."""
        return self._settled.get(call_sid)

    def mark_transferred(self, call_sid: str) -> None:
        """The call now runs someone else's ``<Dial>``: ending it would cut the transfer off."""
        self._settle(call_sid, "transferred")

    async def hangup(self, call_sid: str, send: Callable[[], Awaitable[None]]) -> bool:
        """Run ``send`` unless this call is settled; True when a request was made (and succeeded or 404'd)."""
        if call_sid in self._settled:
            return False
        lock = self._locks.setdefault(call_sid, asyncio.Lock())
        async with lock:
            if call_sid in self._settled:
                return False
            try:
                await send()
            except TelephonyError as error:
                if error.status != 404:
                    raise
                log.info("hangup of %s: the call had already ended", call_sid)
            self._settle(call_sid, "hung up")
            return True

    def _settle(self, call_sid: str, why: str) -> None:
        self._settled[call_sid] = why
        self._settled.move_to_end(call_sid)
        self._locks.pop(call_sid, None)
        while len(self._settled) > self._capacity:
            self._settled.popitem(last=False)


class TwilioRest:
    """:class:`~voicefsm.core.actions.TelephonyActions` backed by Twilio's REST API."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        timeout_s: float = 10,
        api_base: str | None = None,
        region: str | None = None,
        edge: str | None = None,
        http_client: HttpClient | None = None,
        status_callback: str | None = None,
    ) -> None:
        given = {"account_sid": account_sid, "auth_token": auth_token, "from_number": from_number}
        for name, value in given.items():
            if not value:
                raise ValueError(f"TwilioRest needs a non-empty {name}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if api_base is not None and http_client is not None:
            raise ValueError("pass TwilioRest api_base or http_client, not both (api_base builds the client)")
        if http_client is None:
            http_client = (
                _RebasedHttpClient(api_base, timeout=timeout_s)
                if api_base
                else TwilioHttpClient(timeout=timeout_s)  # its default timeout is None: wait forever
            )
        self.account_sid = account_sid
        self.from_number = from_number
        #: Where Twilio reports calls, transfers and SMS placed here (the server's /twilio/status).
        self.status_callback = status_callback
        self.timeout_s = timeout_s
        self.api_base = api_base
        self._client = Client(
            account_sid,
            auth_token,
            region=region,
            edge=edge,
            http_client=http_client,
            environment=_NO_ENVIRONMENT,
        )
        self._hangups = HangupLedger()

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioRest:
        """Build from ``TWILIO_*`` settings; raises TelephonyError naming any that are missing."""
        account_sid = settings.twilio_account_sid or ""
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        from_number = settings.twilio_phone_number or ""
        required = {
            "TWILIO_ACCOUNT_SID": account_sid,
            "TWILIO_AUTH_TOKEN": token,
            "TWILIO_PHONE_NUMBER": from_number,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise TelephonyError(
                "setup",
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; set them in the "
                "environment or .env to place calls, transfer, hang up or send SMS through Twilio",
            )
        return cls(
            account_sid,
            token,
            from_number,
            timeout_s=settings.twilio_timeout_s,
            api_base=settings.twilio_api_base,
            region=settings.twilio_region,
            edge=settings.twilio_edge,
            status_callback=status_callback_url(settings),
        )

    def __repr__(self) -> str:
        return f"TwilioRest(account_sid={self.account_sid!r}, from_number={mask_number(self.from_number)!r})"

    async def place_call(
        self,
        to: str,
        twiml: str,
        *,
        status_callback: str | None = None,
        machine_detection: bool = False,
    ) -> OutboundCall:
        """Dial ``to`` from our number and run ``twiml`` when answered.

        ``status_callback`` receives initiated/ringing/answered/completed (default: this server's
        ``/twilio/status``, when a public URL is configured). ``machine_detection``
        turns on asynchronous answering-machine detection (DetectMessageEnd): the TwiML starts at
        once and the verdict (``AnsweredBy``) is POSTed to ``status_callback``.
        """
        check_twiml("place_call", twiml)
        status_callback = status_callback or self.status_callback
        params: dict[str, Any] = {"to": to, "from_": self.from_number, "twiml": twiml}
        if status_callback:
            params["status_callback"] = status_callback
            params["status_callback_event"] = list(STATUS_CALLBACK_EVENTS)
        if machine_detection:
            params["machine_detection"] = "DetectMessageEnd"
            params["async_amd"] = "true"
            if status_callback:
                params["async_amd_status_callback"] = status_callback
        call = await self._run("place_call", lambda: self._client.calls.create(**params))
        if not call.sid:
            raise TelephonyError("place_call", "Twilio's answer carried no call sid")
        status = str(call.status) if call.status else "unknown"
        log.info("placed call %s to %s (%s)", call.sid, mask_number(to), status)
        return OutboundCall(call_sid=call.sid, status=status)

    async def transfer(self, call_sid: str, number: str, *, say: str | None = None) -> None:
        """Replace the call's TwiML with ``<Dial>number</Dial>``: the media stream stops, the call goes on.

        After a successful transfer, :meth:`hangup` of this call is a no-op, so the teardown of
        our side of the call does not cut the transferred caller off.
        """
        if not number:
            raise TelephonyError("transfer", "no number to transfer the call to")
        twiml = _dial_twiml(number, say=say, status_callback=self.status_callback)
        check_twiml("transfer", twiml)
        await self._run("transfer", lambda: self._client.calls(call_sid).update(twiml=twiml))
        self._hangups.mark_transferred(call_sid)
        log.info("transferred call %s to %s", call_sid, mask_number(number))

    async def hangup(self, call_sid: str) -> None:
        """End the call (``Status=completed``), at most once; a call that already ended is fine.

        A failed attempt raises TelephonyError and is not remembered: calling again retries.
        """

        def end() -> object:
            return self._client.calls(call_sid).update(status="completed")

        async def send() -> None:
            await self._run("hangup", end, already_ended_ok=True)

        if await self._hangups.hangup(call_sid, send):
            log.info("hung up call %s", call_sid)
        else:
            log.debug("hangup of %s skipped: %s already", call_sid, self._hangups.settled(call_sid))

    async def send_sms(self, to: str, body: str) -> str:
        """Send ``body`` to ``to`` from our number; returns the message sid. Never retried (no duplicates)."""
        if not body:
            raise TelephonyError("send_sms", "the message body is empty")
        params: dict[str, Any] = {"to": to, "from_": self.from_number, "body": body}
        if self.status_callback:
            params["status_callback"] = self.status_callback  # delivered, undelivered, failed ...
        message = await self._run("send_sms", lambda: self._client.messages.create(**params))
        if not message.sid:
            raise TelephonyError("send_sms", "Twilio's answer carried no message sid")
        log.info("sent SMS %s to %s", message.sid, mask_number(to))
        return str(message.sid)

    async def _run(self, action: str, request: Callable[[], T], *, already_ended_ok: bool = False) -> T:
        """Run a blocking SDK request in a thread under a deadline; map every failure to TelephonyError."""
        try:
            async with asyncio.timeout(self.timeout_s + _GRACE_S):
                return await asyncio.to_thread(request)
        except TimeoutError as error:
            raise self._timed_out(action) from error
        except requests.Timeout as error:
            raise self._timed_out(action) from error
        except requests.RequestException as error:
            raise TelephonyError(action, self._unreachable(error)) from error
        except TwilioRestException as error:
            if already_ended_ok and (error.status == 404 or error.code in _ALREADY_ENDED_CODES):
                raise TelephonyError(action, "the call has already ended", status=404) from error
            raise _api_error(action, error.status, error.code, error.msg) from error
        except TwilioServiceException as error:
            raise _api_error(action, error.status, error.code, error.detail or error.title) from error
        except TwilioException as error:
            raise TelephonyError(action, mask_numbers(str(error))) from error

    def _timed_out(self, action: str) -> TelephonyError:
        return TelephonyError(
            action,
            f"no answer from Twilio within {self.timeout_s:g} s; retry later, or raise TWILIO_TIMEOUT_S "
            "if the network is slow",
        )

    def _unreachable(self, error: requests.RequestException) -> str:
        url = error.request.url if error.request is not None and error.request.url else None
        parts = urlsplit(str(url)) if url else None
        where = f"{parts.scheme}://{parts.netloc}" if parts else "Twilio"
        hint = "check TWILIO_API_BASE" if self.api_base else "check the network connection"
        return f"could not connect to {where} ({type(error).__name__}); {hint}"


def _api_error(action: str, status: int, code: int | None, message: str) -> TelephonyError:
    """An HTTP error answer from Twilio, with its error code and what to do about it."""
    text = _SDK_PREFIX.sub("", message or "").strip()
    if not text or text.startswith("Unable to "):
        text = _phrase(status)
    if code and code != status:
        text += f" (Twilio error {code}, https://www.twilio.com/docs/errors/{code})"
    hint = _hint(status)
    return TelephonyError(action, mask_numbers(text) + (f" — {hint}" if hint else ""), status=status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _hint(status: int) -> str:
    if status == 401:
        return "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
    if status == 403:
        return "the account may not do this (check geo permissions and trial-account limits)"
    if status == 404:
        return "no such call or resource; it may have ended already"
    if status == 429:
        return "retry later"
    if status >= 500:
        return "Twilio is having trouble; retry later"
    return ""
