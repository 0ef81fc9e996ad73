"""Fault matrix 1-19 (reliability.md §4): the media stream's door and its wire protocol.

Every call here runs through the real server path (tests/faults/harness.py): a signed or dev-mode
app, the Twilio Media Streams protocol over a loopback WebSocket, the fault line flow, its
records in SQLite. Each test ends with the clean-end check.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from harness import (
    FRAME,
    GOODBYE,
    GREETING,
    QUESTION,
    HoldingPhone,
    Line,
    answer_name,
    served_line,
)
from websockets.exceptions import InvalidStatus

from voicefsm.core.events import KeyPressed
from voicefsm.core.intents import PlayAudio
from voicefsm.errors import TransportClosed
from voicefsm.runtime.driver import CallLimits
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.media import dtmf_message, inbound_media_message, mark_echo_message
from voicefsm.telephony.twilio.signature import compute_signature
from voicefsm.telephony.twilio.stream import DTMF_BURST, DTMF_PER_S, TwilioMediaStream

AUTH_TOKEN = "fault-auth-token"
PUBLIC_URL = "https://voice.example.test"
SIGNED_STREAM_URL = "wss://voice.example.test/twilio/stream"
ALL_PROMPTS = [GREETING, QUESTION, GOODBYE]
NAME = "Ada Lovelace"
NORMAL = {"outcome": "completed", "heard": ALL_PROMPTS, "said": [NAME], "slots": {"name": NAME}}


def secure() -> Settings:
    return Settings(_env_file=None, TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICEFSM_PUBLIC_URL=PUBLIC_URL)  # type: ignore[call-arg]


def new_sid() -> str:
    return TwilioStreamClient("ws://unused").call_sid


async def stream_token(line: Line, call_sid: str) -> str:
    """Answer the signed voice webhook for ``call_sid``; return the stream token in its TwiML."""
    form = {"CallSid": call_sid, "From": "+15550001111", "To": "+15550002222"}
    signature = compute_signature(AUTH_TOKEN, f"{PUBLIC_URL}/twilio/voice", form)
    async with httpx.AsyncClient(base_url=line.server.http_url) as http:
        response = await http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    return response.text.split('<Parameter name="token" value="', 1)[1].split('"', 1)[0]


def signed(url: str = SIGNED_STREAM_URL, token: str = AUTH_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(token, url, {})}


def secure_client(line: Line, call_sid: str, token: str | None, **options: object) -> TwilioStreamClient:
    parameters = {} if token is None else {"token": token}
    return line.client(call_sid=call_sid, headers=signed(), custom_parameters=parameters, **options)


async def refused_upgrade(line: Line, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with line.client(headers=headers):
            pass
    return refused.value.response.status_code


async def refused_stream(twilio: TwilioStreamClient) -> None:
    """The stream is closed with 1008 after its start, and hears nothing."""
    async with twilio:
        assert await twilio.wait_closed() == 1008
    assert not twilio.received


def no_session_for(line: Line, call_sid: str) -> None:
    assert call_sid not in line.sessions_closed, "a refused stream opened a session"


# -- 1-5: the door ---------------------------------------------------------------------------------


async def test_fault_01_upgrade_without_signature(tmp_path: Path) -> None:
    async with served_line(tmp_path, settings=secure()) as line:
        assert await refused_upgrade(line, {}) == 403
        assert line.metric("voicefsm_rejected_requests_total") == 1
        assert not line.sessions_closed and not line.stts and not line.ttss  # no session, no provider
        await line.assert_nothing_left()


async def test_fault_02_bad_signature_or_signed_for_another_url(tmp_path: Path) -> None:
    async with served_line(tmp_path, settings=secure()) as line:
        forged = [
            signed(token="not-the-auth-token"),
            signed(f"{line.stream_url}"),  # the Host the proxy rewrote, not the public URL
            signed("ws://voice.example.test/twilio/stream"),  # the wrong scheme
            signed("wss://other.example.test/twilio/stream"),  # another host
        ]
        for headers in forged:
            assert await refused_upgrade(line, headers) == 403
        assert line.metric("voicefsm_rejected_requests_total") == len(forged)
        assert not line.sessions_closed and not line.stts
        # Built from the configured public URL, the same upgrade passes and the call runs.
        sid = new_sid()
        twilio = secure_client(line, sid, await stream_token(line, sid))
        await twilio.open()
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]


async def test_fault_03_missing_wrong_or_reused_stream_token(tmp_path: Path) -> None:
    async with served_line(tmp_path, settings=secure()) as line:
        sid = new_sid()
        token = await stream_token(line, sid)
        await refused_stream(secure_client(line, sid, None))
        await refused_stream(secure_client(line, sid, "x" * len(token)))
        no_session_for(line, sid)
        twilio = secure_client(line, sid, token)
        await twilio.open()
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        await refused_stream(secure_client(line, sid, token))  # reused after the call
        assert line.sessions_closed == [sid]
        assert line.metric("voicefsm_rejected_requests_total") == 3
        await line.assert_nothing_left()


async def test_fault_04_start_for_another_or_an_unknown_call_sid(tmp_path: Path) -> None:
    async with served_line(tmp_path, settings=secure()) as line:
        live_sid, other_sid = new_sid(), new_sid()
        live_token, other_token = await stream_token(line, live_sid), await stream_token(line, other_sid)
        live = secure_client(line, live_sid, live_token)
        await live.open()
        await live.wait_until(lambda: any(m.startswith("ask_name") for m in live.played_marks))
        await refused_stream(secure_client(line, live_sid, other_token))  # the live call's SID, B's token
        await refused_stream(secure_client(line, new_sid(), other_token))  # B's token, an unknown SID
        await refused_stream(secure_client(line, new_sid(), live_token))
        assert not live.closed and line.sessions_closed == []
        await answer_name(line, live, NAME)  # the live call is unaffected
        await line.clean_end(live, **NORMAL)  # type: ignore[arg-type]


async def test_fault_05_second_stream_for_an_active_call_sid(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:  # dev mode: no tokens, so only the one-stream rule decides
        first = line.client()
        await first.open()
        await first.wait_until(lambda: any(m.startswith("ask_name") for m in first.played_marks))
        await refused_stream(line.client(call_sid=first.call_sid))
        assert line.metric("voicefsm_rejected_requests_total") == 1
        assert len(line.stts) == 1 and len(line.ttss) == 1  # never two voices on one call
        await answer_name(line, first, NAME)
        await line.clean_end(first, **NORMAL)  # type: ignore[arg-type]
        assert line.sessions_closed == [first.call_sid]


# -- 6-19: the wire protocol -----------------------------------------------------------------------


def media(twilio: TwilioStreamClient, payload: str, sequence: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence),
            "streamSid": twilio.stream_sid,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
        }
    )


async def test_fault_06_media_mark_and_dtmf_before_start(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open(start=False)
        await twilio.send_raw(media(twilio, base64.b64encode(FRAME).decode()))
        await twilio.send_raw(mark_echo_message(twilio.stream_sid, "greet#1", sequence_number=1))
        await twilio.send_raw(dtmf_message(twilio.stream_sid, "5", sequence_number=1))
        await twilio.start()
        await answer_name(line, twilio, NAME)
        record = await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("before_start") == 3
        assert KeyPressed("5") not in line.events[twilio.call_sid]
        assert record.errors == []


async def test_fault_07_frames_that_are_not_json_objects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-" + "s3cr3t" * 10
    frames = [
        "this is not json {",
        '{"event": "media", "token": "' + secret + '", ',
        "[1, 2, 3]",
        "42",
        '"hi"',
    ]
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open()
        with caplog.at_level(logging.WARNING, logger="voicefsm.telephony.twilio.stream"):
            for frame in frames * 3:
                await twilio.send_raw(frame)
            await answer_name(line, twilio, NAME)
            await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("not_json") == 6 and line.dropped("not_object") == 9
    logged = [r.getMessage() for r in caplog.records if r.name == "voicefsm.telephony.twilio.stream"]
    assert len(logged) == 2  # logged once per kind, not once per frame
    assert all(len(message) < 300 for message in logged)  # truncated
    assert not any(secret[:12] in message for message in caplog.text.splitlines())  # redacted


async def test_fault_08_binary_frame(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open()
        await twilio.send_raw(b"\x00\x01\x02" * 100)
        await twilio.send_raw(FRAME)
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("not_text") == 2


async def test_fault_09_messages_missing_keys(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open(start=False)
        await twilio.send_raw(_start_without_stream_sid(twilio.call_sid))
        await twilio.start()
        await twilio.send_raw(json.dumps({"streamSid": twilio.stream_sid, "media": {}}))  # no event
        await twilio.send_raw(
            json.dumps({"event": "media", "streamSid": twilio.stream_sid, "media": {"track": "inbound"}})
        )
        await twilio.send_raw(json.dumps({"event": "dtmf", "streamSid": twilio.stream_sid}))
        await twilio.send_raw(json.dumps({"event": "mark", "streamSid": twilio.stream_sid, "mark": {}}))
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("missing_event") == 1
        assert line.dropped("invalid_fields") == 4


def _start_without_stream_sid(call_sid: str) -> str:
    start = {
        "accountSid": "AC" + "0" * 32,
        "callSid": call_sid,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start})


async def test_fault_10_bad_base64_and_odd_payloads(tmp_path: Path) -> None:
    payloads = {
        "garbage": "%%%not-base64%%%",
        "bad padding": "abc",
        "empty": "",
        "one byte": base64.b64encode(b"\x7f").decode(),
        "odd length": base64.b64encode(b"\x7f" * 161).decode(),
    }
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open()
        for payload in payloads.values():
            await twilio.send_raw(media(twilio, payload, sequence=next(twilio._sequence)))
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("bad_base64") == 2  # the rest are decodable mu-law bytes, passed on as they are


async def test_fault_12_unknown_events_extra_fields_and_a_new_protocol_version(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open(start=False)
        await twilio.send_raw(json.dumps({"event": "connected", "protocol": "Call", "version": "2.0.0"}))
        await twilio.start()
        await twilio.send_raw(json.dumps({"event": "foo", "streamSid": twilio.stream_sid, "foo": {"x": 1}}))
        extra = json.loads(
            inbound_media_message(
                twilio.stream_sid, FRAME, chunk=1, timestamp_ms=0, sequence_number=next(twilio._sequence)
            )
        )
        extra["media"]["newField"] = {"nested": True}
        extra["future"] = "field"
        await twilio.send_raw(json.dumps(extra))
        stt = await line.wait_stt()
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert line.dropped("unknown_event") == 1
        assert stt.frames_received >= 1  # the frame with extra fields was taken
        body = (await _metrics_text(line)).splitlines()
        assert 'voicefsm_stream_frames_dropped_total{kind="unknown_event"} 1.0' in body


async def _metrics_text(line: Line) -> str:
    async with httpx.AsyncClient(base_url=line.server.http_url) as http:
        return (await http.get("/metrics")).text


async def test_fault_13_unknown_duplicate_and_stale_marks(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.holding_client()
        await twilio.open()
        await twilio.wait_until(twilio.held)
        stt = await line.wait_stt()
        stt.say(NAME, partials=True)  # over the question: a barge-in, the question's mark is cleared
        await twilio.wait_for("clear")
        stale = twilio.cleared_marks[0]
        greet_mark = twilio.played_marks[0]
        for name in (stale, greet_mark, "no-such-mark#7", stale):
            await twilio.send_raw(
                mark_echo_message(twilio.stream_sid, name, sequence_number=next(twilio._sequence))
            )
        record = await line.clean_end(
            twilio,
            outcome="completed",
            heard=ALL_PROMPTS,
            said=[NAME],
            slots={"name": NAME},
            interrupted=True,
        )
        assert [(step.source, step.target) for step in record.path] == [
            ("", "greet"),
            ("greet", "ask_name"),
            ("ask_name", "goodbye"),
        ]
        assert record.transcript[1].interrupted


async def test_fault_14_invalid_digits_and_a_dtmf_flood(tmp_path: Path) -> None:
    presses = 200
    key_times: list[float] = []
    async with served_line(tmp_path) as line:
        line.listeners.append(
            lambda event: key_times.append(time.monotonic()) if isinstance(event, KeyPressed) else None
        )
        twilio = line.client()
        await twilio.open()
        await twilio.wait_until(lambda: any(m.startswith("ask_name") for m in twilio.played_marks))
        for digit in ("Z", "10", "", "٣"):
            await twilio.send_raw(
                dtmf_message(twilio.stream_sid, digit, sequence_number=next(twilio._sequence))
            )
        for _ in range(presses):
            await twilio.press("*")
        await twilio.press("#")
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        keys = [e for e in line.events[twilio.call_sid] if isinstance(e, KeyPressed)]
        # The bucket refills while the server reads the flood: bound it by the server's own timing
        # (the listener runs as each accepted press is handed on).
        elapsed = key_times[-1] - key_times[0]
        assert line.dropped("bad_digit") == 4
        assert DTMF_BURST <= len(keys) <= DTMF_BURST + DTMF_PER_S * elapsed + 1
        assert line.dropped("dtmf_flood") == presses + 1 - len(keys)


async def test_fault_15_stop_twice_media_after_stop_and_stop_then_reset(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        for variant in ("stop twice", "media after stop", "stop then close"):
            twilio = line.client()
            await twilio.open()
            await twilio.wait_until(lambda t=twilio: any(m.startswith("ask_name") for m in t.played_marks))  # type: ignore[misc]
            await twilio.stop()
            if variant == "stop twice":
                await twilio.stop()
            elif variant == "media after stop":
                await twilio.send_media(FRAME)
                await twilio.press("1")
            else:
                await twilio.close()
            await line.clean_end(
                twilio,
                reason="stream stopped",
                outcome="hung_up",
                heard=[GREETING, QUESTION],
                closed_by_server=variant != "stop then close",
            )
            assert line.sessions_closed.count(twilio.call_sid) == 1, variant
        assert line.metric("voicefsm_calls_total", outcome="stream stopped") == 3  # one teardown each


async def test_fault_16_socket_closed_without_stop_mid_speech(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client(playback="realtime")
        await twilio.open()
        await twilio.wait_for("media")  # the greeting is playing
        await twilio.close()
        await line.clean_end(
            twilio,
            reason=("connection closed", "connection lost"),  # whichever pump saw the drop first
            outcome="hung_up",
            heard=[],
            interrupted=True,  # part of the greeting reached the phone before the drop
            closed_by_server=False,
        )
        assert line.stt().stopped  # the recognizer was closed
        record = await line.record(twilio.call_sid)
        assert record.final_state == "hung_up"


async def test_fault_17_stream_silent_past_the_idle_timeout(tmp_path: Path) -> None:
    limits = CallLimits(idle_timeout_s=0.3, handler_grace_s=3.0)
    async with served_line(tmp_path, limits=limits) as line:
        twilio = line.client()
        await twilio.open()  # the phone then sends nothing at all: a half-open line
        await line.clean_end(
            twilio, reason="no media for 0.3 s", outcome="hung_up", heard=[GREETING, QUESTION]
        )


async def test_fault_18_sequence_number_gaps_and_reordering(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = line.client()
        await twilio.open()
        stt = await line.wait_stt()
        base = next(twilio._sequence)
        before = stt.frames_received
        for offset in (0, 2, 1, 6):  # 1 missing, then it arrives late, then 3 missing
            await twilio.send_raw(
                inbound_media_message(
                    twilio.stream_sid, FRAME, chunk=1, timestamp_ms=0, sequence_number=base + offset
                )
            )
        twilio._sequence = itertools.count(base + 7)
        await answer_name(line, twilio, NAME)
        await line.clean_end(twilio, **NORMAL)  # type: ignore[arg-type]
        assert stt.frames_received - before >= 4  # tolerated: every frame reached the recognizer
        assert line.dropped("sequence_gap") == 4
        assert line.dropped("sequence_reordered") == 1


class RawRecordingClient(HoldingPhone):
    """A fake Twilio that also keeps every frame the server sent, as it came off the wire."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.raw: list[str | bytes] = []

    async def _handle(self, frame: str | bytes) -> None:
        self.raw.append(frame)
        await super()._handle(frame)


async def test_fault_19_every_outbound_frame_keeps_the_contract(tmp_path: Path) -> None:
    async with served_line(tmp_path) as line:
        twilio = RawRecordingClient(line.stream_url)
        await twilio.open()
        await twilio.wait_until(twilio.held)
        (await line.wait_stt()).say(NAME)  # a barge-in: a clear goes out too
        await line.clean_end(twilio, outcome="completed", heard=ALL_PROMPTS, said=[NAME], interrupted=True)
    events = set()
    for frame in twilio.raw:
        assert isinstance(frame, str), "a binary frame was sent"
        message = json.loads(frame)
        events.add(message["event"])
        assert message["streamSid"] == twilio.stream_sid
        if message["event"] == "media":
            assert base64.b64decode(message["media"]["payload"], validate=True)
        elif message["event"] == "mark":
            assert isinstance(message["mark"]["name"], str) and message["mark"]["name"]
    assert events == {"media", "mark", "clear"}


class _ClosedSocket:
    """A Starlette WebSocket stand-in that records whatever is sent on it."""

    application_state = None
    sent: list[str]

    def __init__(self) -> None:
        self.sent = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


async def test_fault_19_nothing_is_sent_after_close() -> None:
    socket = _ClosedSocket()
    stream = TwilioMediaStream(socket)  # type: ignore[arg-type]
    stream.stream_sid = "MZ" + "1" * 32
    await stream.send(PlayAudio(FRAME))
    await stream.close("done")
    with pytest.raises(TransportClosed):
        await stream.send(PlayAudio(FRAME))
    assert len(socket.sent) == 1
