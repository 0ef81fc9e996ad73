"""Simulated Twilio calls over loopback: echo load with tagged frames, and booking turns.

Run in its own process (``run.py`` pins it to the core the server does not use), so its CPU
never counts against the server's. Each call is a real ``websockets`` client speaking Media
Streams exactly as Twilio does: ``connected``, ``start``, then 50 inbound frames per second on
an absolute monotonic schedule (a late frame is sent at once, the schedule never drifts), mark
echoes, ``stop``.

``echo``: every frame's payload starts with a tag (2 magic bytes + a 4-byte sequence number),
so the echoed frame is matched to the moment it was sent. Frames sent inside the measurement
window are measured; those not back within the grace period after the window are lost.

``booking``: the caller plays prompts like a phone (a mark is echoed once the audio before it
has played, in real time or at once), then answers each question through the dev-mode API
``POST /api/calls/{call_sid}/caller``. Turn latency runs from that request leaving the client
to the first reply audio frame arriving.

Usage: ``python benchmarks/loadgen.py echo --url ws://127.0.0.1:8080/twilio/stream --calls 100``.
Prints ``{"event": "window_start"}`` when the echo window opens; the result is JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import json
import math
import os
import re
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import procstat
from pydantic_core import from_json
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

FRAME_S = 0.02
FRAME_BYTES = 160
MAGIC = b"\xb7\x3c"
TAG_BYTES = 6  # magic + big-endian sequence number; a multiple of 3, so its base64 is exactly 8 characters
TAG_CHARS = 8
#: Speech-like filler after the tag: any bytes do, the server must send them back unchanged.
FILLER = bytes((0x55 + 7 * i) % 256 for i in range(FRAME_BYTES - TAG_BYTES))
FILLER_B64 = binascii.b2a_base64(FILLER, newline=False).decode("ascii")
ACCOUNT_SID = "AC" + "0" * 32
BOOKING_ANSWERS = {
    "ask_day": "next Tuesday please",
    "ask_time": "half past two",
    "ask_name": "Ada Lovelace",
    "confirm": "yes please",
}


# -- statistics -----------------------------------------------------------------------------------


def summarize_ms(values_s: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """p50/p90/p95/p99/p99.9/max/mean in milliseconds of durations given in seconds."""
    data = np.asarray(values_s, dtype=float) * 1000.0
    if data.size == 0:
        empty = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
        return {"count": 0, **dict.fromkeys(empty)}
    p50, p90, p95, p99, p999 = np.percentile(data, [50, 90, 95, 99, 99.9])
    return {
        "count": int(data.size),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "p999": round(float(p999), 3),
        "max": round(float(data.max()), 3),
        "mean": round(float(data.mean()), 3),
    }


# -- Twilio's messages (built by hand: the client must cost as little as possible) ----------------


def connected_json() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_json(stream_sid: str, call_sid: str, parameters: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        },
        separators=(",", ":"),
    )


def media_json(stream_sid: str, sequence: int, chunk: int, timestamp_ms: int, payload_b64: str) -> str:
    return (
        f'{{"event":"media","sequenceNumber":"{sequence}","streamSid":"{stream_sid}","media":'
        f'{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload_b64}"}}}}'
    )


def mark_echo_json(stream_sid: str, sequence: int, name: str) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(sequence), "streamSid": stream_sid, "mark": {"name": name}},
        separators=(",", ":"),
    )


def stop_json(stream_sid: str, call_sid: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": call_sid},
        },
        separators=(",", ":"),
    )


def tagged_payload(index: int) -> str:
    """Base64 of a 160-byte frame that starts with the tag of frame ``index``."""
    tag = MAGIC + index.to_bytes(4, "big")
    return binascii.b2a_base64(tag, newline=False).decode("ascii") + FILLER_B64


def payload_head(frame: str) -> str | None:
    """The first 8 base64 characters of an outbound media frame's payload (None if not media)."""
    at = frame.find('"payload"')
    if at < 0:
        return None
    start = frame.index('"', at + 9) + 1  # the value's opening quote; allows '"payload": "' too
    return frame[start : start + TAG_CHARS]


def read_tag(head: str) -> int | None:
    """The sequence number in a payload head, or None for untagged audio (a greeting, silence)."""
    try:
        raw = binascii.a2b_base64(head)
    except (binascii.Error, ValueError):
        return None
    if raw[:2] != MAGIC or len(raw) < TAG_BYTES:
        return None
    return int.from_bytes(raw[2:6], "big")


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def open_call(url: str) -> ClientConnection:
    # No compression: Twilio does not negotiate permessage-deflate, and it would dominate both sides' CPU.
    return await connect(url, compression=None, ping_interval=None, max_size=2**20, open_timeout=20)


# -- echo -----------------------------------------------------------------------------------------


class Timeline:
    """When calls connect, when the measurement window opens and closes, and when lost is lost.

    The window opens once the server has digested the calls' set-up (records, recordings, the
    greeting): at least ``warm_s`` after the last call connected, when the server's CPU use has
    settled below a full core, or at ``max_warm_s`` at the latest (an overloaded server never settles).
    """

    def __init__(
        self, begin: float, ramp_s: float, warm_s: float, max_warm_s: float, measure_s: float, grace_s: float
    ) -> None:
        self.begin = begin
        self.ramp_s = ramp_s
        self.warm_s = warm_s
        self.max_warm_s = max(warm_s, max_warm_s)
        self.measure_s = measure_s
        self.grace_s = grace_s
        self.window_start: float | None = None
        self.window_end: float | None = None
        self.fixed = asyncio.Event()

    @property
    def latest_end(self) -> float:
        return self.begin + self.ramp_s + self.max_warm_s + self.measure_s + 1.0

    @property
    def deadline(self) -> float:
        assert self.window_end is not None
        return self.window_end + self.grace_s

    def fix(self, start: float) -> None:
        self.window_start, self.window_end = start, start + self.measure_s
        self.fixed.set()


class EchoCall:
    """One simulated caller on an echo line: tagged frames out, their echoes matched on the way back."""

    def __init__(self, index: int, url: str, timeline: Timeline, connect_at: float) -> None:
        self.url = url
        self.timeline = timeline
        self.connect_at = connect_at
        self.stream_sid = f"MZ{index:032x}"
        self.call_sid = f"CA{index:032x}"
        capacity = math.ceil((timeline.latest_end - connect_at) / FRAME_S) + 2
        self.sent_at = array("d", bytes(8 * capacity))
        self.received_at = array("d", bytes(8 * capacity))
        self.base = 0.0  # when frame 0 was due; frame k is due at base + k * FRAME_S
        self.sent = 0
        self.first = 0  # measured frames are [first, last), known once sending has stopped
        self.last = 0
        self.measuring = False
        self.outstanding = 0
        self.all_back = asyncio.Event()
        self.untagged_media = 0
        self.marks = 0
        self.duplicates = 0
        self.error: str | None = None
        self.sequence = 1

    async def run(self) -> None:
        await sleep_until(self.connect_at)
        try:
            ws = await open_call(self.url)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.error = f"connect: {exc!r}"
            return
        reader = asyncio.create_task(self._read(ws), name="echo-read")
        try:
            await ws.send(connected_json())
            await ws.send(start_json(self.stream_sid, self.call_sid, {"caller": "+15550000000"}))
            await self._send_frames(ws)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.timeline.deadline - time.monotonic())):
                    await self.all_back.wait()
            self.sequence += 1
            await ws.send(stop_json(self.stream_sid, self.call_sid, self.sequence))
        except ConnectionClosed as exc:
            self.error = self.error or f"closed by the server: {exc!r}"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()

    async def _send_frames(self, ws: ClientConnection) -> None:
        timeline = self.timeline
        base = self.base = time.monotonic()
        sent_at = self.sent_at
        index = 0
        while index < len(sent_at):
            due = base + index * FRAME_S
            if timeline.window_end is not None and due >= timeline.window_end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[index] = time.monotonic()
            self.sent = index + 1
            self.sequence += 1
            await ws.send(
                media_json(self.stream_sid, self.sequence, index + 1, int(index * 20), tagged_payload(index))
            )
            index += 1
        assert timeline.window_start is not None
        self.first = min(index, max(0, math.ceil((timeline.window_start - base) / FRAME_S)))
        self.last = index
        self.outstanding = sum(1 for k in range(self.first, self.last) if not self.received_at[k])
        self.measuring = True
        if self.outstanding == 0:
            self.all_back.set()

    async def _read(self, ws: ClientConnection) -> None:
        received_at = self.received_at
        try:
            async for frame in ws:
                now = time.monotonic()
                if not isinstance(frame, str):
                    continue
                head = payload_head(frame)
                if head is not None:
                    index = read_tag(head)
                    if index is None or index >= self.sent:
                        self.untagged_media += 1
                    elif received_at[index]:
                        self.duplicates += 1
                    else:
                        received_at[index] = now
                        if self.measuring and self.first <= index < self.last:
                            self.outstanding -= 1
                            if self.outstanding == 0:
                                self.all_back.set()
                    continue
                message = from_json(frame)
                if message.get("event") == "mark":
                    self.marks += 1
                    self.sequence += 1
                    await ws.send(mark_echo_json(self.stream_sid, self.sequence, message["mark"]["name"]))
        except ConnectionClosed as exc:
            if not self.all_back.is_set():
                self.error = self.error or f"closed by the server: {exc!r}"

    def latencies(self) -> tuple[np.ndarray, int]:
        """Echo latencies (s) of the measured frames that came back, and how many did not."""
        sent = np.frombuffer(self.sent_at, dtype=float)[self.first : self.last]
        back = np.frombuffer(self.received_at, dtype=float)[self.first : self.last]
        arrived = back > 0
        return back[arrived] - sent[arrived], int(sent.size - arrived.sum())

    def send_lags(self) -> np.ndarray:
        """How late (s) each measured frame left the client after its slot: the client's own lag."""
        sent = np.frombuffer(self.sent_at, dtype=float)[self.first : self.last]
        due = self.base + np.arange(self.first, self.last) * FRAME_S
        return sent - due


class ServerWatch:
    """Reads the server's CPU and RSS at the window's edges (and its RSS each second inside it)."""

    def __init__(self, pid: int | None, core: int | None = None) -> None:
        self.pid = pid
        self.core = core
        self.core_busy: list[float] = []
        self.idle: procstat.ProcSample | None = None
        self.start: procstat.ProcSample | None = None
        self.end: procstat.ProcSample | None = None
        self.rss_peak = 0

    def read_core(self) -> None:
        if self.core is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.core_busy.append(procstat.core_busy_seconds(self.core))

    def read(self) -> procstat.ProcSample | None:
        if self.pid is None:
            return None
        try:
            reading = procstat.sample(self.pid)
        except (OSError, KeyError, ValueError):
            return None
        self.rss_peak = max(self.rss_peak, reading.rss_bytes)
        return reading

    async def watch(self, window_start: float, window_end: float) -> None:
        await sleep_until(window_start)
        self.read_core()
        self.start = self.read()
        while time.monotonic() + 1.0 < window_end:
            await asyncio.sleep(1.0)
            self.read()
        await sleep_until(window_end)
        self.end = self.read()
        self.read_core()

    def report(self, calls: int, window_s: float) -> dict[str, Any]:
        if self.start is None or self.end is None:
            return {"server_cpu_s": None}
        cpu_s = self.end.cpu_s - self.start.cpu_s
        idle_rss = self.idle.rss_bytes if self.idle is not None else None
        per_call = (self.rss_peak - idle_rss) / calls if idle_rss is not None and calls else None
        other = None
        if len(self.core_busy) == 2:
            # Whatever else ran on the server's core (other processes, interrupts): noise in these numbers.
            other = round(max(0.0, (self.core_busy[1] - self.core_busy[0] - cpu_s) / window_s), 3)
        return {
            "server_cpu_s": round(cpu_s, 3),
            "server_cpu_util": round(cpu_s / window_s, 3),
            "cpu_s_per_call_s": round(cpu_s / (calls * window_s), 6) if calls else None,
            "rss_idle_mib": round(idle_rss / 2**20, 1) if idle_rss is not None else None,
            "rss_loaded_mib": round(self.rss_peak / 2**20, 1),
            "rss_per_call_kib": round(per_call / 1024, 1) if per_call is not None else None,
            "server_core_other_util": other,
        }


async def pick_window(timeline: Timeline, watch: ServerWatch) -> None:
    """Open the window once the server's CPU use has settled after the calls' set-up (see Timeline)."""
    await sleep_until(timeline.begin + timeline.ramp_s + timeline.warm_s)
    latest = timeline.begin + timeline.ramp_s + timeline.max_warm_s
    previous: float | None = None
    while watch.pid is not None and time.monotonic() + 0.5 <= latest:
        try:
            before = procstat.cpu_seconds(watch.pid)
            await asyncio.sleep(0.5)
            rate = (procstat.cpu_seconds(watch.pid) - before) / 0.5
        except (OSError, ValueError):
            break
        if previous is not None and rate < 0.9 and abs(rate - previous) <= 0.05 + 0.1 * previous:
            break
        previous = rate
    timeline.fix(time.monotonic())


async def run_echo(
    url: str,
    calls: int,
    *,
    ramp_s: float,
    warm_s: float,
    max_warm_s: float,
    measure_s: float,
    grace_s: float,
    server_pid: int | None,
    server_core: int | None = None,
    on_window_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``calls`` echo calls; return latency, loss, and the server's CPU and memory during the window."""
    watch = ServerWatch(server_pid, server_core)
    watch.idle = watch.read()
    watch.rss_peak = 0
    timeline = Timeline(time.monotonic() + 0.2, ramp_s, warm_s, max_warm_s, measure_s, grace_s)
    members = [
        EchoCall(index, url, timeline, timeline.begin + index * ramp_s / calls) for index in range(calls)
    ]
    client_cpu: list[float] = []

    async def observe() -> None:
        await timeline.fixed.wait()
        assert timeline.window_start is not None and timeline.window_end is not None
        client_start = os.times()
        if on_window_start is not None:
            on_window_start()
        await watch.watch(timeline.window_start, timeline.window_end)
        client_end = os.times()
        used = (client_end.user + client_end.system) - (client_start.user + client_start.system)
        client_cpu.append(used / measure_s)

    tasks = [asyncio.create_task(member.run(), name="echo-call") for member in members]
    helpers = [asyncio.create_task(pick_window(timeline, watch)), asyncio.create_task(observe())]
    try:
        async with asyncio.timeout(timeline.latest_end + grace_s + 30.0 - time.monotonic()):
            await asyncio.gather(*tasks, *helpers)
    finally:
        for task in (*tasks, *helpers):
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)

    latencies: list[np.ndarray] = []
    lags: list[np.ndarray] = []
    lost = 0
    for member in members:
        values, missing = member.latencies()
        latencies.append(values)
        lags.append(member.send_lags())
        lost += missing
    joined = np.concatenate(latencies) if latencies else np.zeros(0)
    lag = np.concatenate(lags) if lags else np.zeros(0)
    errors = [member.error for member in members if member.error]
    report = watch.report(calls, measure_s)
    assert timeline.window_start is not None
    if watch.idle is not None and watch.start is not None and report.get("cpu_s_per_call_s"):
        # Set-up = the server's CPU from idle to the window, less the steady echo cost of that time.
        call_seconds = sum(max(0.0, timeline.window_start - member.connect_at) for member in members)
        setup_s = watch.start.cpu_s - watch.idle.cpu_s - report["cpu_s_per_call_s"] * call_seconds
        report["setup_cpu_ms_per_call"] = round(max(0.0, setup_s) / calls * 1000, 2)
    return {
        "mode": "echo",
        "calls": calls,
        "window_s": measure_s,
        "warm_s": round(timeline.window_start - timeline.begin - ramp_s, 2),
        "calls_failed": sum(1 for member in members if member.error),
        "errors": errors[:3],
        "frames_measured": int(joined.size + lost),
        "frames_lost": lost,
        "duplicates": sum(member.duplicates for member in members),
        "untagged_media": sum(member.untagged_media for member in members),
        "marks": sum(member.marks for member in members),
        "latency_ms": summarize_ms(joined),
        "client_cpu_util": round(client_cpu[0], 3) if client_cpu else None,
        "client_send_lag_ms": summarize_ms(lag),
        **report,
    }


# -- booking --------------------------------------------------------------------------------------


class MiniHttp:
    """A keep-alive HTTP/1.1 client for one JSON POST at a time: the least client work per request."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict[str, Any]) -> int:
        reused = self._writer is not None and not self._writer.is_closing()
        try:
            return await self._post_once(path, body)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # The server dropped the idle keep-alive connection (uvicorn does after 5 s): once more, afresh.
        await self.close()
        self._writer = None
        return await self._post_once(path, body)

    async def _post_once(self, path: str, body: dict[str, Any]) -> int:
        status, _ = await self._request(path, json.dumps(body).encode(), "application/json")
        return status

    async def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
        """POST a form (as Twilio posts its webhooks) on a fresh connection; (status, body)."""
        await self.close()
        self._writer = None
        return await self._request(path, urlencode(fields).encode(), "application/x-www-form-urlencoded")

    async def _request(self, path: str, data: bytes, content_type: str) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self._writer.write(head.encode("ascii") + data)
        response = await self._reader.readuntil(b"\r\n\r\n")
        status = int(response.split(b" ", 2)[1])
        length = 0
        for line in response.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self._reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


@dataclass(slots=True)
class Turn:
    """One answer and the reply it got."""

    label: str
    posted_at: float
    acked_s: float | None = None
    reply_s: float | None = None


@dataclass(eq=False)
class BookingCall:
    """One caller booking an appointment: plays prompts, answers each question, hangs up when told."""

    index: int
    url: str
    http_base: str
    connect_at: float
    think_s: float
    realtime: bool
    deadline: float
    webhook: bool = False
    turns: list[Turn] = field(default_factory=list)
    error: str | None = None
    completed: bool = False
    media_frames: int = 0
    #: From "ringing" (the voice webhook's POST, or the stream's connect without ``webhook``) to the
    #: first greeting frame.
    ring_s: float | None = None

    def __post_init__(self) -> None:
        self.stream_sid = f"MZ{self.index:032x}"
        self.call_sid = f"CA{self.index:032x}"
        self.http = MiniHttp(self.http_base)
        self.sequence = 1
        self.playback_until = 0.0
        self.waiting: Turn | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.rang_at = 0.0

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ring(self) -> dict[str, str]:
        """Twilio's voice webhook for this call; the stream parameters its TwiML asks for (the token)."""
        fields = {
            "CallSid": self.call_sid,
            "From": "+15550000000",
            "To": "+15550000001",
            "CallStatus": "ringing",
        }
        status, body = await self.http.post_form("/twilio/voice", fields)
        if status != 200:
            raise OSError(f"voice webhook: HTTP {status}")
        found = re.search(rb'<Parameter name="token" value="([^"]+)"', body)
        return {"token": found.group(1).decode()} if found else {}

    async def run(self) -> None:
        await sleep_until(self.connect_at)
        self.rang_at = time.monotonic()
        try:
            parameters = {"caller": "+15550000000", **(await self._ring() if self.webhook else {})}
            ws = await open_call(self.url)
        except (OSError, TimeoutError, WebSocketException, asyncio.IncompleteReadError) as exc:
            self.error = f"connect: {exc!r}"
            return
        sender = asyncio.create_task(self._send_audio(ws), name="booking-audio")
        try:
            await ws.send(connected_json())
            await ws.send(start_json(self.stream_sid, self.call_sid, parameters))
            async with asyncio.timeout(max(0.1, self.deadline - time.monotonic())):
                await self._read(ws)
        except TimeoutError:
            self.error = f"no hang-up before the deadline (after {len(self.turns)} answers)"
        except ConnectionClosed as exc:
            self.error = f"connection lost: {exc!r}"
        finally:
            for task in (sender, *self.tasks):
                task.cancel()
            await asyncio.gather(sender, *self.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()
            await self.http.close()

    async def _send_audio(self, ws: ClientConnection) -> None:
        payload = binascii.b2a_base64(b"\xfe" * FRAME_BYTES, newline=False).decode("ascii")
        base = time.monotonic()
        index = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await sleep_until(base + index * FRAME_S)
                self.sequence += 1
                await ws.send(media_json(self.stream_sid, self.sequence, index + 1, index * 20, payload))
                index += 1

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            now = time.monotonic()
            if not isinstance(frame, str):
                continue
            message = from_json(frame)
            event = message.get("event")
            if event == "media":
                self.media_frames += 1
                if self.ring_s is None:
                    self.ring_s = now - self.rang_at
                waiting = self.waiting
                if waiting is not None:
                    waiting.reply_s = now - waiting.posted_at
                    self.waiting = None
                size = len(message["media"]["payload"]) * 3 // 4
                self.playback_until = max(self.playback_until, now) + size / 8000
            elif event == "mark":
                name = message["mark"]["name"]
                due = self.playback_until if self.realtime else now
                self._spawn(self._played(ws, name, due))
        self.completed = True  # the server hung up: the goodbye was said

    async def _played(self, ws: ClientConnection, name: str, due: float) -> None:
        await sleep_until(due)
        self.sequence += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(mark_echo_json(self.stream_sid, self.sequence, name))
        label = name.split("#", 1)[0]
        answer = BOOKING_ANSWERS.get(label)
        if answer is not None:
            await asyncio.sleep(self.think_s)
            await self._answer(label, answer)

    async def _answer(self, label: str, text: str) -> None:
        turn = Turn(label, time.monotonic())
        self.turns.append(turn)
        self.waiting = turn
        try:
            status = await self.http.post_json(f"/api/calls/{self.call_sid}/caller", {"text": text})
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error = f"inject: {exc!r}"
            return
        turn.acked_s = time.monotonic() - turn.posted_at
        if status != 202:
            self.error = f"inject: HTTP {status}"


async def run_booking(
    url: str,
    http_base: str,
    calls: int,
    *,
    ramp_s: float,
    think_s: float,
    realtime: bool,
    timeout_s: float,
    server_pid: int | None,
    server_core: int | None = None,
    webhook: bool = False,
) -> dict[str, Any]:
    """Run ``calls`` booking calls to the end; return turn latencies and the server's CPU and memory."""
    watch = ServerWatch(server_pid, server_core)
    watch.idle = watch.read()
    watch.rss_peak = 0
    begin = time.monotonic() + 0.2
    deadline = begin + ramp_s + timeout_s
    members = [
        BookingCall(i, url, http_base, begin + i * ramp_s / calls, think_s, realtime, deadline, webhook)
        for i in range(calls)
    ]
    watch.read_core()
    watch.start = watch.read()
    started = time.monotonic()
    client_start = os.times()

    async def sample_rss() -> None:
        while True:
            await asyncio.sleep(0.5)
            watch.read()

    sampler = asyncio.create_task(sample_rss())
    try:
        await asyncio.gather(*(member.run() for member in members))
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    elapsed = time.monotonic() - started
    watch.end = watch.read()
    watch.read_core()
    client_end = os.times()
    turns = [turn for member in members for turn in member.turns]
    replies = [turn.reply_s for turn in turns if turn.reply_s is not None]
    acks = [turn.acked_s for turn in turns if turn.acked_s is not None]
    by_label = {
        label: summarize_ms([t.reply_s for t in turns if t.label == label and t.reply_s is not None])
        for label in BOOKING_ANSWERS
    }
    errors = [member.error for member in members if member.error]
    report = watch.report(calls, elapsed)
    # CPU per call-second over the whole run (calls ramp in and end at different times: a rough figure).
    return {
        "mode": "booking",
        "calls": calls,
        "calls_completed": sum(1 for member in members if member.completed and not member.error),
        "calls_failed": len(errors),
        "errors": errors[:3],
        "turns": len(turns),
        "turns_unanswered": len(turns) - len(replies),
        "turn_latency_ms": summarize_ms(replies),
        "turn_latency_by_state_ms": by_label,
        "inject_ack_ms": summarize_ms(acks),
        "ring_to_greeting_ms": summarize_ms([m.ring_s for m in members if m.ring_s is not None]),
        "ring_from": "voice webhook POST" if webhook else "stream connect",
        "elapsed_s": round(elapsed, 2),
        "client_cpu_util": round(
            ((client_end.user + client_end.system) - (client_start.user + client_start.system)) / elapsed, 3
        ),
        **report,
    }


# -- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Simulated Twilio calls over loopback.")
    modes = parser.add_subparsers(dest="mode", required=True)
    echo = modes.add_parser("echo", help="tagged-frame echo latency and loss")
    echo.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/twilio/stream")
    echo.add_argument("--calls", type=int, required=True)
    echo.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls connect")
    echo.add_argument("--warm", type=float, default=2.0, help="at least this long after the ramp, seconds")
    echo.add_argument("--max-warm", type=float, default=10.0, help="at most this long after the ramp")
    echo.add_argument("--measure", type=float, default=6.0, help="measurement window, seconds")
    echo.add_argument("--grace", type=float, default=1.0, help="how late an echo may be before it is lost")
    booking = modes.add_parser("booking", help="turn latency through the booking flow")
    booking.add_argument("--url", required=True)
    booking.add_argument("--http", required=True, help="http://127.0.0.1:PORT")
    booking.add_argument("--calls", type=int, required=True)
    booking.add_argument("--ramp", type=float, default=2.0)
    booking.add_argument("--think", type=float, default=0.3, help="pause before each answer, seconds")
    booking.add_argument("--playback", choices=("realtime", "instant"), default="realtime")
    booking.add_argument("--timeout", type=float, default=90.0, help="a call not done by then is a failure")
    booking.add_argument(
        "--webhook", action="store_true", help="ring first: POST the voice webhook, stream with its token"
    )
    for sub in (echo, booking):
        sub.add_argument("--server-pid", type=int, default=None, help="read CPU and RSS of this process")
        sub.add_argument("--server-core", type=int, default=None, help="the core the server is pinned to")
        sub.add_argument("--out", default=None, help="write the JSON result here (default: stdout)")
    return parser


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "echo":

        def window_started() -> None:
            print(json.dumps({"event": "window_start"}), flush=True)

        return await run_echo(
            args.url,
            args.calls,
            ramp_s=args.ramp,
            warm_s=args.warm,
            max_warm_s=args.max_warm,
            measure_s=args.measure,
            grace_s=args.grace,
            server_pid=args.server_pid,
            server_core=args.server_core,
            on_window_start=window_started,
        )
    return await run_booking(
        args.url,
        args.http,
        args.calls,
        ramp_s=args.ramp,
        think_s=args.think,
        realtime=args.playback == "realtime",
        timeout_s=args.timeout,
        server_pid=args.server_pid,
        server_core=args.server_core,
        webhook=args.webhook,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run the load on uvloop (when installed), write the JSON result."""
    args = _parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_main(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_main(args))
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
