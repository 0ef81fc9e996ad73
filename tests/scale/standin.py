"""A Twilio stand-in for several ``voicefsm serve`` workers behind one load balancer.

It places inbound calls as Twilio does (the voice webhook, then the media stream the TwiML opens,
with its ``<Parameter>``s), but routes like a load balancer: the webhook to one worker, the stream to
another. When a stream closes, for whatever reason, it runs the TwiML's next verb as Twilio would:
the ``<Redirect>`` back to the voice webhook, on a worker still alive, and the new stream it answers
with (a resumed call), until the answer opens no stream. Answers are keypad presses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from cli.test_cli import READY, Served, clean_env

from voicefsm.telephony.twilio.client import TwilioStreamClient

FLOW = Path(__file__).resolve().parent / "flows" / "order.py"
QUESTIONS = ("ask_size", "ask_crust")
CALL_TIMEOUT_S = 30.0
#: Three servers starting side by side on a busy 2-core machine: generous, and only a bound.
STARTUP_TIMEOUT_S = 90.0
CALLER = "+15550001234"


@dataclass
class Worker:
    """One served worker: its process, name and HTTP client."""

    name: str
    served: Served
    http: httpx.AsyncClient
    alive: bool = True

    @property
    def stream_url(self) -> str:
        return f"{self.served.ws_url}/twilio/stream"

    def kill(self) -> None:
        """SIGKILL: no drain, no last write."""
        self.alive = False
        self.served.process.kill()


@contextlib.asynccontextmanager
async def served_worker(
    folder: Path, name: str, db_url: str, *, lease_s: float, flow: Path = FLOW
) -> AsyncIterator[Worker]:
    """``voicefsm serve FLOW`` as worker ``name`` on ``db_url``, ready (its banner printed)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    stderr_path = folder / "serve.stderr"
    env = clean_env(
        VOICEFSM_DB_URL=db_url,
        VOICEFSM_WORKER_NAME=name,
        VOICEFSM_CALL_LEASE_S=str(lease_s),
        VOICEFSM_RECORDINGS_DIR="",
    )
    command = [sys.executable, "-m", "voicefsm", "serve", str(flow), "--stt", "scripted", "--tts", "scripted"]
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, "--port", "0", cwd=folder, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            banner: list[str] = []
            try:
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    while not (ready := READY.search(banner[-1] if banner else "")):
                        line = await process.stdout.readline()
                        if not line:
                            raise AssertionError(
                                f"{name} exited before listening:\n{stderr_path.read_text()}"
                            )
                        banner.append(line.decode())
            except TimeoutError:
                raise AssertionError(f"{name} printed no URL in {STARTUP_TIMEOUT_S} s: {banner}") from None
            served = Served(process, ready.group(1), int(ready.group(2)), banner, stderr_path)
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
                yield Worker(name, served, http)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def served_workers(
    folder: Path, names: Sequence[str], db_url: str, *, lease_s: float
) -> AsyncIterator[list[Worker]]:
    """Several workers on one database, started side by side (start-up dominates)."""
    async with contextlib.AsyncExitStack() as stack:
        workers = await asyncio.gather(
            *(
                stack.enter_async_context(served_worker(folder / name, name, db_url, lease_s=lease_s))
                for name in names
            )
        )
        yield list(workers)


@dataclass
class Leg:
    """One media stream of a call: where its webhook and stream went, and how the stream closed."""

    hook: str
    stream: str
    resumed: bool
    close_code: int | None = None
    heard: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)


@dataclass
class CallTrace:
    """What the stand-in saw of one call."""

    call_sid: str
    legs: list[Leg] = field(default_factory=list)
    ended: bool = False  # the last answer opened no stream: the call is over for Twilio


T = TypeVar("T")


async def poll(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout_s: float
) -> T:
    """``fetch()`` again every 0.2 s until ``done`` holds, bounded; for state kept by other processes
    (a database row), which offers nothing to await."""
    seen: list[T] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                seen[:] = [await fetch()]
                if done(seen[0]):
                    return seen[0]
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what} after {timeout_s:g} s; last seen: {seen}") from None


#: Called when a question has been heard, before it is answered: may wait (a test's gate).
Gate = Callable[[CallTrace, str, Worker], Awaitable[None]]


class TwilioStandIn:
    """Places calls across ``workers`` as Twilio behind a load balancer would."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self._turn = itertools.count()

    def live(self, *, besides: Worker | None = None) -> Worker:
        """The next live worker (round robin), another than ``besides`` when there is one."""
        candidates = [w for w in self.workers if w.alive and w is not besides] or [
            w for w in self.workers if w.alive
        ]
        assert candidates, "no live worker left"
        return candidates[next(self._turn) % len(candidates)]

    async def call(
        self,
        call_sid: str,
        hook: Worker,
        stream: Worker,
        answers: dict[str, str],
        *,
        gate: Gate | None = None,
        follow_redirect: Callable[[CallTrace], bool] = lambda trace: True,
    ) -> CallTrace:
        """One call to its end: webhook on ``hook``, stream on ``stream``, redirects on live workers."""
        trace = CallTrace(call_sid)
        try:
            return await self._call(trace, hook, stream, answers, gate, follow_redirect)
        except TimeoutError:
            raise AssertionError(f"call {call_sid} did not end in {CALL_TIMEOUT_S:g} s: {trace}") from None

    async def _call(
        self,
        trace: CallTrace,
        hook: Worker,
        stream: Worker,
        answers: dict[str, str],
        gate: Gate | None,
        follow_redirect: Callable[[CallTrace], bool],
    ) -> CallTrace:
        call_sid = trace.call_sid
        async with asyncio.timeout(CALL_TIMEOUT_S):
            twiml = await self._webhook(hook, call_sid)
            while True:
                opened = _stream_of(twiml)
                if opened is None:
                    trace.ended = True
                    return trace
                parameters, redirect = opened
                leg = Leg(hook.name, stream.name, parameters.get("resume") == "1")
                trace.legs.append(leg)
                await self._stream(trace, leg, stream, parameters, answers, gate)
                if not redirect or not follow_redirect(trace):
                    return trace  # no <Redirect>, or the caller hung up: Twilio ends the call
                hook = self.live()
                stream = self.live(besides=hook)
                twiml = await self._webhook(hook, call_sid)

    async def _webhook(self, worker: Worker, call_sid: str) -> str:
        form = {"CallSid": call_sid, "From": CALLER, "To": "+15550009999", "CallStatus": "in-progress"}
        answer = await worker.http.post("/twilio/voice", data=form)
        assert answer.status_code == 200, answer.text
        return answer.text

    async def _stream(
        self,
        trace: CallTrace,
        leg: Leg,
        worker: Worker,
        parameters: dict[str, str],
        answers: dict[str, str],
        gate: Gate | None,
    ) -> None:
        phone = TwilioStreamClient(worker.stream_url, call_sid=trace.call_sid, custom_parameters=parameters)
        await phone.open()
        try:
            cursor = 0
            while True:
                question = await _next_question(phone, cursor)
                if question is None:
                    break
                cursor = len(phone.played_marks)
                leg.heard.append(question)
                leg.marks = list(phone.played_marks)
                if gate is not None:
                    await gate(trace, question, worker)
                if phone.closed:
                    break
                with contextlib.suppress(Exception):  # the worker may die as we press
                    await phone.press(answers[question])
            leg.close_code = phone.close_code
        finally:
            leg.marks = list(phone.played_marks)
            await phone.close()


async def _next_question(phone: TwilioStreamClient, cursor: int) -> str | None:
    """The next question the phone has heard to the end (past ``cursor``), or None once it closed."""

    def asked() -> str | None:
        for mark in phone.played_marks[cursor:]:
            label = mark.split("#")[0]
            if label in QUESTIONS:
                return label
        return None

    await phone.wait_until(lambda: asked() is not None or phone.closed, timeout_s=CALL_TIMEOUT_S)
    return asked()


def _stream_of(twiml: str) -> tuple[dict[str, str], bool] | None:
    """The ``<Stream>``'s parameters and whether a ``<Redirect>`` follows, or None (no stream)."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        return None
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return parameters, root.find("./Redirect") is not None
