"""The Twilio transport over a real loopback socket, driven by a fake Twilio that speaks the wire protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from voicefsm.core.events import CallEvent, Committed, Disconnected, KeyPressed, MarkReceived
from voicefsm.providers.scripted import ScriptedSpeechToText, ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.driver import CallLimits
from voicefsm.server.app import create_app
from voicefsm.server.services import CallServices
from voicefsm.server.serving import RunningServer, running_server
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.client import TwilioStreamClient
from voicefsm.telephony.twilio.signature import compute_signature

FRAME = b"\xff" * 160
AUTH_TOKEN = "test-auth-token"
PUBLIC_URL = "https://voice.example.test"


@dataclass
class Recorder:
    """What the server-side handlers saw, per CallSid; ``changed`` is set whenever any of it changes."""

    events: dict[str, list[CallEvent]] = field(default_factory=dict)
    stts: dict[str, ScriptedSpeechToText] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)
    speak_results: dict[str, object] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def event_sink(self, call_sid: str) -> Callable[[CallEvent], None]:
        events = self.events.setdefault(call_sid, [])

        def sink(event: CallEvent) -> None:
            events.append(event)
            self.changed.set()

        return sink

    def end(self, call_sid: str, reason: str) -> None:
        self.ended[call_sid] = reason
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait, bounded, until ``predicate`` holds; re-checked whenever the recorder changes."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def greeting_handler(recorder: Recorder, *, then_wait: bool = True) -> Callable[[Call], object]:
    """Speak a greeting, confirm it by mark, then stay on the line until the call ends."""

    async def handle(call: Call) -> None:
        sid = call.call_sid or "?"
        call.subscribe(recorder.event_sink(sid))
        recorder.speak_results[sid] = await call.speak(ScriptedTextToSpeech(), "Hello, caller", label="greet")
        if then_wait:
            await call.disconnected.wait()
        recorder.end(sid, call.disconnect_reason or "?")

    return handle


def make_services(recorder: Recorder, **limits: float) -> CallServices:
    def stt_factory() -> ScriptedSpeechToText:
        stt = ScriptedSpeechToText()
        recorder.stts[f"#{len(recorder.stts)}"] = stt
        return stt

    return CallServices(
        handler=greeting_handler(recorder),  # type: ignore[arg-type]
        stt_factory=stt_factory,
        limits=CallLimits(**limits),  # type: ignore[arg-type]
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def dev_server(recorder: Recorder) -> AsyncIterator[RunningServer]:
    services = make_services(recorder, idle_timeout_s=5.0)
    app = create_app(Settings(_env_file=None), services)  # type: ignore[call-arg]
    async with running_server(app) as server:
        yield server
    assert not app.state.voicefsm.registry.active


def stream_url(server: RunningServer) -> str:
    return f"{server.ws_url}/twilio/stream"


async def test_a_call_hears_audio_and_marks_and_its_dtmf_and_speech_reach_the_handler(
    dev_server: RunningServer, recorder: Recorder
) -> None:
    async with TwilioStreamClient(stream_url(dev_server)) as twilio:
        marks = await twilio.wait_for("mark")
        assert marks[0].name is not None and marks[0].name.startswith("greet#")
        assert len(twilio.agent_audio) == ScriptedTextToSpeech().audio_bytes_for("Hello, caller")
        for _ in range(10):
            await twilio.send_media(FRAME)
        await twilio.press("5")
        stt = next(iter(recorder.stts.values()))
        await asyncio.wait_for(_loop_turns_until(lambda: stt.frames_received == 10), 5)
        stt.say("I would like to book", partials=False)
        events = recorder.events[twilio.call_sid]
        await recorder.until(lambda: Committed("I would like to book") in events, 5)
        assert KeyPressed("5") in events
        assert MarkReceived(marks[0].name) in events
        await twilio.stop()
        assert await twilio.wait_closed() == 1000
    await recorder.until(lambda: twilio.call_sid in recorder.ended, 5)
    assert recorder.ended[twilio.call_sid] == "stream stopped"
    assert events[-1] == Disconnected("stream stopped")
    assert stt.stopped


async def test_a_hang_up_request_closes_the_stream(recorder: Recorder) -> None:
    async def hang_up(call: Call) -> None:
        await call.speak(ScriptedTextToSpeech(), "Goodbye")
        call.request_disconnect("goodbye said")
        await call.disconnected.wait()
        recorder.end(call.call_sid or "?", call.disconnect_reason or "?")

    app = create_app(Settings(_env_file=None), CallServices(handler=hang_up))  # type: ignore[call-arg]
    async with running_server(app) as server, TwilioStreamClient(stream_url(server)) as twilio:
        assert await twilio.wait_closed() == 1000
        await recorder.until(lambda: twilio.call_sid in recorder.ended, 5)
    assert recorder.ended[twilio.call_sid] == "goodbye said"
    assert twilio.played_marks and twilio.played_marks[0].startswith("prompt#")


async def test_a_socket_dropped_without_stop_ends_the_call(
    dev_server: RunningServer, recorder: Recorder
) -> None:
    twilio = TwilioStreamClient(stream_url(dev_server))
    await twilio.open()
    await twilio.wait_for("mark")
    await twilio.close()
    await recorder.until(lambda: twilio.call_sid in recorder.ended, 5)
    assert recorder.ended[twilio.call_sid] == "connection closed"


async def test_a_silent_stream_is_ended_by_the_idle_timeout(recorder: Recorder) -> None:
    app = create_app(Settings(_env_file=None), make_services(recorder, idle_timeout_s=0.3))  # type: ignore[call-arg]
    async with running_server(app) as server, TwilioStreamClient(stream_url(server)) as twilio:
        assert await twilio.wait_closed(timeout_s=5) == 1000
        await recorder.until(lambda: twilio.call_sid in recorder.ended, 5)
    assert recorder.ended[twilio.call_sid] == "no media for 0.3 s"


async def test_the_idle_timeout_counts_from_the_last_frame_not_before_it(recorder: Recorder) -> None:
    app = create_app(Settings(_env_file=None), make_services(recorder, idle_timeout_s=0.5))  # type: ignore[call-arg]
    async with running_server(app) as server, TwilioStreamClient(stream_url(server)) as twilio:
        await twilio.stream_audio(b"\xff" * 160 * 60, realtime=True)  # 1.2 s of media: longer than idle
        last_frame_at = time.monotonic()
        assert await twilio.wait_closed(timeout_s=5) == 1000
        silent_for = time.monotonic() - last_frame_at
        await recorder.until(lambda: twilio.call_sid in recorder.ended, 5)
    assert recorder.ended[twilio.call_sid] == "no media for 0.5 s"
    assert silent_for >= 0.5


MALFORMED: dict[str, str | bytes] = {
    "not json": "this is not json {",
    "binary frame": b"\x00\x01\x02",
    "json list": "[1, 2, 3]",
    "missing event": json.dumps({"streamSid": "MZ1"}),
    "unknown event": json.dumps({"event": "surprise", "streamSid": "MZ1"}),
    "wrong types": json.dumps({"event": "media", "streamSid": "MZ1", "media": "nope"}),
    "bad base64": json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "%%%not-base64"},
        }
    ),
    "bad padding": json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "abc"},
        }
    ),
    "over 64 KiB": json.dumps({"event": "media", "padding": "x" * 70_000}),
    "bad digit": json.dumps(
        {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "Z"}}
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_every_malformed_frame_is_dropped_and_the_call_goes_on(
    kind: str, dev_server: RunningServer, recorder: Recorder
) -> None:
    async with (
        TwilioStreamClient(stream_url(dev_server)) as good,
        TwilioStreamClient(stream_url(dev_server)) as bad,
    ):
        await bad.wait_for("mark")
        for _ in range(3):
            await bad.send_raw(MALFORMED[kind])
        await bad.press("7")
        await good.press("1")
        bad_events = recorder.events[bad.call_sid]
        await recorder.until(lambda: KeyPressed("7") in bad_events, 5)
        await recorder.until(lambda: KeyPressed("1") in recorder.events.get(good.call_sid, []), 5)
        assert not bad.closed and not good.closed
        await bad.stop()
        await good.stop()


async def test_media_before_start_is_dropped(dev_server: RunningServer, recorder: Recorder) -> None:
    twilio = TwilioStreamClient(stream_url(dev_server))
    await twilio.open(start=False)
    payload = base64.b64encode(FRAME).decode()
    await twilio.send_raw(
        json.dumps(
            {
                "event": "media",
                "streamSid": twilio.stream_sid,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            }
        )
    )
    await twilio.start()
    await twilio.wait_for("mark")
    await twilio.press("3")
    await recorder.until(lambda: KeyPressed("3") in recorder.events.get(twilio.call_sid, []), 5)
    await twilio.stop()
    await twilio.close()


async def test_one_hundred_concurrent_calls_leave_nothing_behind(recorder: Recorder) -> None:
    calls = 100
    app = create_app(Settings(_env_file=None), make_services(recorder))  # type: ignore[call-arg]
    async with running_server(app) as server:
        clients = [TwilioStreamClient(stream_url(server)) for _ in range(calls)]

        async def one_call(twilio: TwilioStreamClient) -> None:
            async with twilio:
                await twilio.wait_for("mark", timeout_s=30)
                await twilio.stream_audio(FRAME * 25)  # half a second at 50 frames/s
                await twilio.press("9")
                await twilio.stop()
                await twilio.wait_closed(timeout_s=30)

        await asyncio.gather(*(one_call(twilio) for twilio in clients))
        await recorder.until(lambda: len(recorder.ended) == calls, 30)
        assert not app.state.voicefsm.registry.active
        leftover = [
            t.get_name()
            for t in asyncio.all_tasks()
            if t.get_name().startswith(("call-", "stt-", "scripted"))
        ]
        assert leftover == []
    assert all(reason == "stream stopped" for reason in recorder.ended.values())
    assert all(KeyPressed("9") in recorder.events[twilio.call_sid] for twilio in clients)
    assert all(len(twilio.agent_audio) > 0 for twilio in clients)


# -- signatures, tokens and one stream per call ---------------------------------------------


@pytest.fixture
async def secure_server(recorder: Recorder) -> AsyncIterator[RunningServer]:
    settings = Settings(_env_file=None, TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICEFSM_PUBLIC_URL=PUBLIC_URL)  # type: ignore[call-arg]
    app = create_app(settings, make_services(recorder))
    async with running_server(app) as server:
        yield server


def signed_headers(url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(AUTH_TOKEN, url, params)}


async def webhook(server: RunningServer, form: dict[str, str], *, signed: bool = True) -> httpx.Response:
    headers = signed_headers(f"{PUBLIC_URL}/twilio/voice", form) if signed else {}
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        return await http.post("/twilio/voice", data=form, headers=headers)


def stream_token(twiml: str) -> str:
    marker = '<Parameter name="token" value="'
    return twiml.split(marker, 1)[1].split('"', 1)[0]


async def test_unsigned_webhook_and_stream_are_refused_with_403(secure_server: RunningServer) -> None:
    response = await webhook(secure_server, {"CallSid": "CA1", "From": "+15550001111"}, signed=False)
    assert response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        async with TwilioStreamClient(stream_url(secure_server)):
            pass
    assert refused.value.response.status_code == 403


async def test_a_signed_call_streams_with_its_single_use_token(
    secure_server: RunningServer, recorder: Recorder
) -> None:
    form = {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": "+15550002222"}
    response = await webhook(secure_server, form)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert "wss://voice.example.test/twilio/stream" in response.text
    token = stream_token(response.text)
    retried = await webhook(secure_server, form)
    assert stream_token(retried.text) == token  # a retried webhook is idempotent
    headers = signed_headers("wss://voice.example.test/twilio/stream", {})
    async with TwilioStreamClient(
        stream_url(secure_server),
        call_sid=form["CallSid"],
        headers=headers,
        custom_parameters={"token": token},
    ) as twilio:
        await twilio.wait_for("mark")
        # A second stream for the same call is refused, and the first goes on.
        async with TwilioStreamClient(
            stream_url(secure_server),
            call_sid=form["CallSid"],
            headers=headers,
            custom_parameters={"token": token},
        ) as intruder:
            assert await intruder.wait_closed() == 1008
        await twilio.press("2")
        await recorder.until(lambda: KeyPressed("2") in recorder.events[form["CallSid"]], 5)
        await twilio.stop()
    # The token was single use: a replay after the call is refused.
    async with TwilioStreamClient(
        stream_url(secure_server),
        call_sid=form["CallSid"],
        headers=headers,
        custom_parameters={"token": token},
    ) as replay:
        assert await replay.wait_closed() == 1008


async def test_a_stream_without_a_token_is_refused_when_signatures_are_on(
    secure_server: RunningServer,
) -> None:
    headers = signed_headers("wss://voice.example.test/twilio/stream", {})
    async with TwilioStreamClient(stream_url(secure_server), headers=headers) as twilio:
        assert await twilio.wait_closed() == 1008


async def test_a_token_for_another_call_is_refused(secure_server: RunningServer) -> None:
    response = await webhook(secure_server, {"CallSid": "CA" + "2" * 32, "From": "+15550001111"})
    token = stream_token(response.text)
    headers = signed_headers("wss://voice.example.test/twilio/stream", {})
    async with TwilioStreamClient(
        stream_url(secure_server),
        call_sid="CA" + "3" * 32,
        headers=headers,
        custom_parameters={"token": token},
    ) as twilio:
        assert await twilio.wait_closed() == 1008


async def test_status_callbacks_are_signed_and_accepted(secure_server: RunningServer) -> None:
    form = {"CallSid": "CA" + "9" * 32, "CallStatus": "completed"}
    async with httpx.AsyncClient(base_url=secure_server.http_url) as http:
        refused = await http.post("/twilio/status", data=form)
        accepted = await http.post(
            "/twilio/status", data=form, headers=signed_headers(f"{PUBLIC_URL}/twilio/status", form)
        )
    assert (refused.status_code, accepted.status_code) == (403, 204)


async def test_dev_mode_webhook_points_the_stream_back_at_the_caller(dev_server: RunningServer) -> None:
    response = await webhook(dev_server, {"CallSid": "CA" + "5" * 32}, signed=False)
    assert response.status_code == 200
    assert f'url="ws://{dev_server.host}:{dev_server.port}/twilio/stream"' in response.text


async def _loop_turns_until(predicate: Callable[[], bool]) -> None:
    """Yield loop turns (no wall-clock waiting) until the recognizer's reader task has caught up."""
    while not predicate():  # noqa: ASYNC110 - the reader is a plain task with nothing to await on
        await asyncio.sleep(0)
