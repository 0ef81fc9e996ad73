"""A loopback fake of the three Twilio REST endpoints voicefsm uses, speaking their real wire protocol.

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: 201 with a new ``CA…`` sid, status ``queued``.
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``: 200 (``Status=completed`` ends it).
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: 201 with a new ``SM…`` sid.

Every request is recorded (method, path, form as a multi-dict, whether its Basic auth matched)
before anything else happens. Wrong credentials get Twilio's 401 (code 20003). Faults are
scripted with :meth:`TwilioRestFake.fail_next` and apply, in order, to the next requests.
A :meth:`Fault.silent` request never answers until :meth:`TwilioRestFake.close`, which releases
it before stopping the server, so shutdown never waits on a hung handler.

It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1:0 in a thread (the SDK under test is blocking
and runs in worker threads, so the fake needs no event loop). Point the SDK at it with
``TwilioRest(..., api_base=fake.base_url)``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import itertools
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"

_CREATE_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls\.json$")
_UPDATE_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<call>CA\w+)\.json$")
_SEND_SMS = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Messages\.json$")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    form: dict[str, list[str]]
    authorized: bool

    def value(self, name: str) -> str | None:
        """The first value of form field ``name``, or None."""
        values = self.form.get(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Every value of a repeated form field (``StatusCallbackEvent``)."""
        return list(self.form.get(name, []))


@dataclass(frozen=True, slots=True)
class Fault:
    """What the fake does instead of answering normally: an HTTP error, or nothing at all."""

    status: int = 0
    code: int | None = None
    message: str = ""
    silent: bool = False

    @classmethod
    def not_found(cls) -> Fault:
        """Twilio's answer for a call that has already ended (or never existed)."""
        return cls(404, 20404, "The requested resource was not found")

    @classmethod
    def too_many_requests(cls) -> Fault:
        """Rate limited."""
        return cls(429, 20429, "Too Many Requests")

    @classmethod
    def server_error(cls) -> Fault:
        """Twilio's side failed."""
        return cls(500, 20500, "Internal Server Error")

    @classmethod
    def never_answer(cls) -> Fault:
        """Accept the request and say nothing until the fake closes."""
        return cls(silent=True)


class TwilioRestFake:
    """The fake server. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.release = threading.Event()
        self.call_status: dict[str, str] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: collections.deque[Fault] = collections.deque()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the Twilio REST fake is not running; call start() or use it in a with block")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, fault: Fault, *, times: int = 1) -> None:
        """Answer the next ``times`` (authorized) requests with ``fault`` instead of normally."""
        with self._lock:
            self._faults.extend([fault] * times)

    def start(self) -> TwilioRestFake:
        """Bind 127.0.0.1 on an ephemeral port and serve in a thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="twilio-rest-fake", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release silent handlers, stop serving and join every thread."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TwilioRestFake:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Called from handler threads.

    def _record(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            self._requests.append(request)
            if request.authorized and self._faults:
                return self._faults.popleft()
        return None

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.account_sid}:{self.auth_token}"

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        form = request.value
        path = request.path
        not_found = _error(404, 20404, f"The requested resource {path} was not found")
        if request.method != "POST" or not path.startswith(f"/2010-04-01/Accounts/{self.account_sid}/"):
            return not_found
        if _CREATE_CALL.match(path):
            sid = f"CA{next(self._ids):032x}"
            with self._lock:
                self.call_status[sid] = "queued"
            body = {"sid": sid, "status": "queued", "to": form("To"), "from": form("From")}
            return 201, self._resource(body, path.removesuffix(".json") + f"/{sid}.json")
        if match := _UPDATE_CALL.match(path):
            sid = match["call"]
            with self._lock:
                if form("Status") is not None:
                    self.call_status[sid] = str(form("Status"))
                status = self.call_status.setdefault(sid, "in-progress")
            return 200, self._resource({"sid": sid, "status": status}, path)
        if _SEND_SMS.match(path):
            sid = f"SM{next(self._ids):032x}"
            body = {"sid": sid, "status": "queued", "to": form("To"), "from": form("From")}
            body["body"] = form("Body")
            return 201, self._resource(body, path.removesuffix(".json") + f"/{sid}.json")
        return not_found

    def _resource(self, fields: dict[str, Any], uri: str) -> dict[str, Any]:
        common = {"account_sid": self.account_sid, "api_version": "2010-04-01", "direction": "outbound-api"}
        return {**common, "uri": uri, **fields}


def _error(status: int, code: int | None, message: str) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        body["code"] = code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return status, body


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no handler thread idles on a kept-alive socket at shutdown.
    protocol_version = "HTTP/1.0"
    timeout = 30

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads :attr:`TwilioRestFake.requests` instead."""

    def _handle(self) -> None:
        fake: TwilioRestFake = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        path, _, query = self.path.partition("?")
        form = parse_qs(raw or query, keep_blank_values=True)
        authorized = fake._authorized(self.headers.get("Authorization"))
        request = RecordedRequest(self.command, path, form, authorized)
        fault = fake._record(request)
        if not request.authorized:
            self._send(*_error(401, 20003, "Authenticate"))
        elif fault is not None and fault.silent:
            fake.release.wait()
            self.close_connection = True
        elif fault is not None:
            self._send(*_error(fault.status, fault.code, fault.message))
        else:
            self._send(*fake._answer(request))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout) before we answered
