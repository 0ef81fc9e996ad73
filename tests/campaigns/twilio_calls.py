"""The Twilio REST stand-in with calls that happen: each created call ends after ``duration_s`` with a
scripted status, which is POSTed to the call's StatusCallback (and AsyncAmdStatusCallback) as Twilio does.

With ``converse=True`` an answered call also runs its TwiML as Twilio would: the ``<Redirect>`` to the
voice webhook is followed (signed), the ``<Connect><Stream>`` it answers is opened (signed) with its
parameters, and the callee is a machine (``answered_by``: once the greeting has played, the verdict is
POSTed to the AsyncAmdStatusCallback while the stream runs) or a person who presses ``keys[number]``,
one key after each prompt from the second on; the call ends when the server hangs up. The marks
each call's phone played are kept in ``heard``.

It records when each call was created and how many were live (created, terminal status not yet
delivered) at any time, so tests can check pacing and the concurrency cap from the outside. Callbacks
go to one of ``deliver_to`` (round robin), as a load balancer in front of several workers would.
By hand: ``python tests/campaigns/twilio_calls.py`` serves one and prints its base URL.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from twilio.request_validator import RequestValidator

from voicefsm.telephony.twilio.client import TwilioStreamClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakes.twilio_rest_fake import RecordedRequest, TwilioRestFake


@dataclass(frozen=True, slots=True)
class Created:
    """One call as the stand-in saw it created."""

    sid: str
    to: str
    at: float  # time.monotonic()
    machine_detection: str | None


class TwilioCalls(TwilioRestFake):
    """``script[number]`` lists the terminal status of each successive call to it (default: completed)."""

    def __init__(
        self,
        *,
        duration_s: float = 0.2,
        script: dict[str, list[str]] | None = None,
        answered_by: dict[str, str] | None = None,
        deliver_to: Sequence[str] = (),
        converse: bool = False,
        keys: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.duration_s = duration_s
        self.script = {number: list(statuses) for number, statuses in (script or {}).items()}
        self.answered_by = dict(answered_by or {})
        self.deliver_to = list(deliver_to)
        self.converse = converse
        self.keys = dict(keys or {})
        #: Call sid -> the marks (prompts) the callee's phone played, once the call has ended.
        self.heard: dict[str, list[str]] = {}
        self.created: list[Created] = []
        self.live = 0
        self.max_live = 0
        self.callback_errors: list[str] = []
        self.ended: dict[str, str] = {}  # call sid -> terminal status, once its callback was answered
        self.all_ended = threading.Condition()
        self._round_robin = itertools.count()
        self._timers: list[threading.Timer] = []

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        status, body = super()._answer(request)
        if status == 201 and str(body.get("sid", "")).startswith("CA"):
            self._started(str(body["sid"]), request)
        return status, body

    def _started(self, sid: str, request: RecordedRequest) -> None:
        to = request.value("To") or ""
        with self.all_ended:
            self.created.append(Created(sid, to, time.monotonic(), request.value("MachineDetection")))
            self.live += 1
            self.max_live = max(self.max_live, self.live)
            planned = self.script.get(to, [])
            final = planned.pop(0) if planned else "completed"
        timer = threading.Timer(self.duration_s, self._end, args=(sid, to, final, request))
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _url(self, url: str) -> str:
        if not self.deliver_to:
            return url
        parts = urllib.parse.urlsplit(url)
        base = urllib.parse.urlsplit(self.deliver_to[next(self._round_robin) % len(self.deliver_to)])
        return urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    def _post(self, url: str, form: dict[str, str]) -> str:
        # Signed as Twilio signs it: over the URL it was given (a load balancer may send it elsewhere).
        signature = RequestValidator(self.auth_token).compute_signature(url, form)
        request = urllib.request.Request(
            self._url(url),
            data=urllib.parse.urlencode(form).encode(),
            headers={"X-Twilio-Signature": signature},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return bytes(answer.read()).decode()
        except OSError as error:
            self.callback_errors.append(f"{url}: {error}")
            return ""

    def _end(self, sid: str, to: str, final: str, request: RecordedRequest) -> None:
        common = {"CallSid": sid, "AccountSid": self.account_sid, "To": to, "Direction": "outbound-api"}
        verdict = self.answered_by.get(to)
        amd_url = request.value("AsyncAmdStatusCallback")
        if final == "completed" and self.converse:
            try:
                asyncio.run(self._converse(common, request))
            except Exception as error:  # reported by the test, never a stuck stand-in
                self.callback_errors.append(f"call {sid}: {type(error).__name__}: {error}")
        elif final == "completed" and verdict and amd_url and request.value("MachineDetection"):
            self._post(amd_url, {**common, "AnsweredBy": verdict, "MachineDetectionDuration": "1800"})
        with self.all_ended:  # the call is over for the carrier before Twilio reports it
            self.live -= 1
        callback = request.value("StatusCallback")
        if callback:
            self._post(callback, {**common, "CallStatus": final, "CallDuration": "1"})
        with self.all_ended:
            self.call_status[sid] = final
            self.ended[sid] = final
            self.all_ended.notify_all()

    async def _converse(self, common: dict[str, str], request: RecordedRequest) -> None:
        """The answered call runs its TwiML: webhook, stream, a machine's verdict or a person's keys."""
        sid, to = common["CallSid"], common["To"]
        redirect = ElementTree.fromstring(request.value("Twiml") or "<Response/>").find("Redirect")
        if redirect is None or not redirect.text:
            raise AssertionError(f"the call's TwiML has no <Redirect>: {request.value('Twiml')!r}")
        answered = {**common, "From": request.value("From") or "", "CallStatus": "in-progress"}
        twiml = await asyncio.to_thread(self._post, redirect.text, answered)
        stream = ElementTree.fromstring(twiml).find(".//Stream")
        if stream is None:
            raise AssertionError(f"the voice webhook did not answer with a <Stream>: {twiml!r}")
        url = stream.get("url") or ""
        parameters = {item.get("name") or "": item.get("value") or "" for item in stream.iter("Parameter")}
        signature = RequestValidator(self.auth_token).compute_signature(url, {})
        # Signed over the URL given; a wss:// URL on loopback is reached in ws://, as through a TLS proxy.
        reached = url.replace("wss://127.0.0.1", "ws://127.0.0.1", 1)
        phone = TwilioStreamClient(
            reached, call_sid=sid, custom_parameters=parameters, headers={"X-Twilio-Signature": signature}
        )
        async with phone:
            await phone.wait_for("mark", timeout_s=20)  # the greeting played (over a machine's own)
            verdict, amd_url = self.answered_by.get(to), request.value("AsyncAmdStatusCallback")
            if verdict and amd_url and request.value("MachineDetection"):
                verdict_form = {**common, "AnsweredBy": verdict, "MachineDetectionDuration": "4100"}
                await asyncio.to_thread(self._post, amd_url, verdict_form)
            else:
                for asked, key in enumerate(self.keys.get(to, ""), 2):
                    await phone.wait_for("mark", count=asked, timeout_s=20)  # the next question was asked
                    await phone.press(key)
            await phone.wait_closed(timeout_s=30)
        with self._lock:
            self.heard[sid] = list(phone.played_marks)

    def close(self) -> None:
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        super().close()


if __name__ == "__main__":
    import signal

    stand_in = TwilioCalls(duration_s=float(sys.argv[1]) if len(sys.argv) > 1 else 2.0).start()
    print(stand_in.base_url, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stand_in.close()
