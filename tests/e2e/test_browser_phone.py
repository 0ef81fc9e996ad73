"""The browser phone in real headless Chromium: WAV-file microphone, keypad, typed text, history page.

Two groups of tests:
- the page's own audio code (mu-law codec, playback and marks), served straight from
  ``voicefsm/server/static`` through Playwright's request routing: no server needed;
- whole calls against the real server running ``flows/booking.py`` (fixture ``booking_server``).

Set ``VOICEFSM_E2E_BASE_URL`` to run the call tests against a server that is already running.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from e2e.browser import chromium_missing_reason, launch_chromium, write_microphone_wav

from voicefsm.core.audio import SAMPLE_RATE_HZ, ulaw_decode, ulaw_encode

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "voicefsm" / "server" / "static"
BOOKING_FLOW = REPO / "flows" / "booking.py"
ROUTED_ORIGIN = "http://voicefsm.test"

# What the caller answers in each listening state of flows/booking.py (ids as in /api/flow).
SPOKEN_ANSWERS = {"ask_day": "friday"}
TYPED_ANSWERS = {
    "ask_day": ("type", "next tuesday"),
    "ask_time": ("type", "10 am"),
    "ask_name": ("type", "Alex"),
    "confirm": ("key", "1"),
}
BOOKED_STATE = "booked"

_MISSING = chromium_missing_reason()
if _MISSING is not None and os.environ.get("VOICEFSM_REQUIRE_BROWSER"):  # set by scripts/test.sh (CI)
    raise RuntimeError(f"the browser tests must run here, but {_MISSING}")
pytestmark = [pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""), pytest.mark.timeout(60)]


# ---- the page's own code, no server ----------------------------------------------------------


@pytest.fixture
def static_page() -> Iterator[Page]:
    """A blank page whose origin serves voicefsm/server/static at /static (no server, no network).

    Function-scoped on purpose: sync Playwright keeps an event loop running in this thread while
    it is open, which would collide with the async fixtures pytest-asyncio runs around each test.
    """

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ROUTED_ORIGIN).split("?")[0]
        file = (STATIC / path.removeprefix("/static/")).resolve()
        if path == "/":
            route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>test</title>")
        elif path.startswith("/static/") and file.is_relative_to(STATIC) and file.is_file():
            content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            route.fulfill(status=200, content_type=content_type, body=file.read_bytes())
        else:
            route.fulfill(status=404, body="not found")

    with launch_chromium() as context:
        context.route(f"{ROUTED_ORIGIN}/**", serve)
        page = context.new_page()
        page.goto(f"{ROUTED_ORIGIN}/")
        yield page


def test_mulaw_codec_in_the_browser_is_bit_exact_with_python(static_page: Page) -> None:
    encoded = static_page.evaluate(
        """async () => {
            const m = await import('/static/js/mulaw.js');
            const all = new Int16Array(65536);
            for (let i = 0; i < 65536; i += 1) all[i] = i - 32768;
            const floats = Float32Array.from(all, (s) => s / 32768);
            return {
                pcm: m.toBase64(m.encodePcm16(all)),
                floats: m.toBase64(m.encodeFloat(floats)),
                decoded: Array.from(m.DECODE),
                roundTrip: Array.from(m.fromBase64(m.toBase64(Uint8Array.from({length: 256}, (_, i) => i)))),
            };
        }"""
    )
    every_sample = b"".join(s.to_bytes(2, "little", signed=True) for s in range(-32768, 32768))
    expected = ulaw_encode(every_sample)
    assert base64.b64decode(encoded["pcm"]) == expected
    assert base64.b64decode(encoded["floats"]) == expected  # float samples (as Web Audio gives) too
    decoded = ulaw_decode(bytes(range(256)))
    assert encoded["decoded"] == [
        int.from_bytes(decoded[i : i + 2], "little", signed=True) for i in range(0, 512, 2)
    ]
    assert encoded["roundTrip"] == list(range(256))


def test_player_echoes_marks_after_playback_and_at_once_on_clear(static_page: Page) -> None:
    result = static_page.evaluate(
        """async () => {
            const { Player } = await import('/static/js/player.js');
            const context = new AudioContext({ sampleRate: 8000 });
            await context.resume();
            const echoed = [];
            let played;
            const due = new Promise((resolve) => { played = resolve; });
            const t0 = context.currentTime;
            const player = new Player(context, (name) => {
                echoed.push({ name, at: context.currentTime - t0 });
                if (name === 'after') played();
            });
            player.mark('nothing-queued');
            player.enqueue(new Uint8Array(800).fill(0x90));   // 100 ms
            player.enqueue(new Uint8Array(800).fill(0x10));   // 100 ms more, gap-free
            player.mark('after');
            const speakingWhileQueued = player.speaking;
            await due;
            const playedAfterFirst = player.playedSamples;
            player.enqueue(new Uint8Array(16000).fill(0x90)); // 2 s, then cleared at once
            player.mark('cleared');
            const before = echoed.length;
            player.clear();
            const clearedAtOnce = echoed.length === before + 1 && echoed[before].name === 'cleared';
            const result = { echoed, speakingWhileQueued, playedAfterFirst, clearedAtOnce,
                             speakingAfterClear: player.speaking, playedTotal: player.playedSamples };
            await context.close();
            return result;
        }"""
    )
    names = [mark["name"] for mark in result["echoed"]]
    assert names == ["nothing-queued", "after", "cleared"]
    assert result["echoed"][1]["at"] >= 0.2  # not before the 200 ms queued ahead of it had played
    assert result["speakingWhileQueued"] is True
    assert result["playedAfterFirst"] == 1600
    assert result["clearedAtOnce"] is True
    assert result["speakingAfterClear"] is False
    assert 1600 <= result["playedTotal"] < 1600 + 16000


# ---- whole calls against the server ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(base_url: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            pytest.fail(f"`voicefsm serve` exited with {process.returncode} before serving:\n{tail}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a subprocess we cannot await; bounded by the deadline
    pytest.fail(f"the server at {base_url} did not answer /healthz within 30 s; log: {log}")


@pytest.fixture(scope="module")
def booking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a dev-mode server running flows/booking.py with local speech."""
    external = os.environ.get("VOICEFSM_E2E_BASE_URL")
    if external:
        base_url = external.rstrip("/")
        process = None
        log = Path(os.devnull)
    else:
        workdir = tmp_path_factory.mktemp("booking_server")
        log = workdir / "server.log"
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(
                ("TWILIO_", "ELEVENLABS_", "AZURE_")
            )  # no credentials: local speech, dev mode
        }
        env["VOICEFSM_RECORDINGS_DIR"] = str(workdir / "recordings")
        command = [
            sys.executable,
            "-m",
            "voicefsm",
            "serve",
            str(BOOKING_FLOW),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(base_url, process, log)
        httpx.get(f"{base_url}/api/flow", timeout=5.0).raise_for_status()
        httpx.get(f"{base_url}/", timeout=5.0).raise_for_status()
        yield base_url
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _flow(base_url: str) -> dict[str, Any]:
    flow: dict[str, Any] = httpx.get(f"{base_url}/api/flow", timeout=5.0).json()
    return flow


def _prompt_seconds(prompt: str | None) -> float:
    """How long the server's espeak-ng voice takes to say a prompt (templates filled with a stand-in)."""
    if not prompt:
        return 0.0
    from voicefsm.providers.local_tts import synthesize_ulaw

    return len(synthesize_ulaw(re.sub(r"\{[^}]*\}", "Tuesday", prompt))) / SAMPLE_RATE_HZ


def _first_question(flow: dict[str, Any]) -> tuple[str, float]:
    """The first listening state and how long the agent talks before the caller is expected to answer."""
    states = {state["id"]: state for state in flow["states"]}
    state, talk = flow["initial"], 0.0
    for _ in range(len(states)):
        talk += _prompt_seconds(states[state]["prompt"])
        if states[state]["kind"] == "ask":
            return state, talk
        onward = [t["target"] for t in flow["transitions"] if t["source"] == state and t["event"] == "spoken"]
        if not onward:
            break
        state = onward[0]
    pytest.fail(
        f"could not find the first question of {flow['name']} by following `spoken` from {flow['initial']}"
    )


def _open_phone(page: Page, base_url: str, query: str = "") -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/{query}")
    page.wait_for_function("() => window.voicefsmPhone && window.voicefsmPhone.flow !== null", timeout=10_000)
    assert errors == []


def _snapshot(page: Page) -> dict[str, Any]:
    snapshot: dict[str, Any] = page.evaluate(
        """() => { const p = window.voicefsmPhone; return {
            status: p.status, callSid: p.callSid, lastState: p.lastState, visited: p.visited,
            transcript: p.transcript, slots: p.slots, framesSent: p.framesSent, digitsSent: p.digitsSent,
            marksEchoed: p.marksEchoed, audioPlayedSamples: p.audioPlayedSamples, micStatus: p.micStatus,
            endReason: p.endReason }; }"""
    )
    return snapshot


def test_a_call_by_voice_advances_on_recognised_speech(booking_server: str, tmp_path: Path) -> None:
    flow = _flow(booking_server)
    question, talk_s = _first_question(flow)
    if question not in SPOKEN_ANSWERS:
        pytest.fail(
            f"{flow['name']} first asks in state {question!r}: add its spoken answer to SPOKEN_ANSWERS"
        )
    after_answer = {
        t["target"] for t in flow["transitions"] if t["source"] == question and t["event"] == "filled"
    }
    # The file plays from when the page opens the microphone, i.e. when the call starts; the answer
    # comes a second after the greeting and the question have been spoken.
    microphone = tmp_path / "caller.wav"
    write_microphone_wav(microphone, [talk_s + 1.0, SPOKEN_ANSWERS[question], 3.0])

    with launch_chromium(microphone_wav=microphone) as context:
        page = context.new_page()
        _open_phone(page, booking_server, "?mic=raw")  # raw: no echo cancellation or gain on a WAV
        page.click("#call")
        page.wait_for_function("() => window.voicefsmPhone.connected", timeout=10_000)
        page.wait_for_function(
            "(q) => { const p = window.voicefsmPhone; return p.visited.includes(q) && p.lastState !== q; }",
            arg=question,
            timeout=talk_s * 1000 + 15_000,
        )
        call = _snapshot(page)
        assert call["micStatus"] == "on"
        assert call["lastState"] in after_answer, f"left {question} for {call['lastState']}, not by `filled`"
        caller_turns = [t["text"].lower() for t in call["transcript"] if t["speaker"] == "caller"]
        assert any(SPOKEN_ANSWERS[question] in text for text in caller_turns), caller_turns
        agent_turns = [t["text"] for t in call["transcript"] if t["speaker"] == "agent"]
        assert len(agent_turns) >= 2, agent_turns  # greeting and question, at least
        assert call["audioPlayedSamples"] > SAMPLE_RATE_HZ, "the page played less than a second of the agent"
        assert call["framesSent"] > 50 * talk_s
        assert call["marksEchoed"] >= 1

        page.click("#hangup")
        page.wait_for_function("() => window.voicefsmPhone.status === 'ended'", timeout=10_000)


def _wait_for_turn_to_answer(page: Page, pending: list[str]) -> str | None:
    """The next state to answer, once its question has begun playing; None when the call has ended.

    Answering while the question plays is what an impatient caller does: the agent should stop
    talking (``clear``) and take the answer, which also keeps this test short.
    """
    page.wait_for_function(
        """(pending) => {
            const p = window.voicefsmPhone;
            if (p.status === 'ended') return true;
            if (!pending.includes(p.lastState)) return false;
            return p.speaking || performance.now() - p.stateEnteredAt > 1500;
        }""",
        arg=pending,
        timeout=20_000,
    )
    state: str | None = page.evaluate(
        "() => window.voicefsmPhone.status === 'ended' ? null : window.voicefsmPhone.lastState"
    )
    return state


def test_b_a_booking_by_keypad_and_typed_text_without_a_microphone(booking_server: str) -> None:
    flow = _flow(booking_server)
    state_ids = {state["id"] for state in flow["states"]}
    assert set(TYPED_ANSWERS) | {BOOKED_STATE} <= state_ids, (
        f"booking flow states changed: {sorted(state_ids)}"
    )

    with launch_chromium(allow_microphone=False) as context:
        page = context.new_page()
        _open_phone(page, booking_server)
        page.click("#call")
        page.wait_for_function("() => window.voicefsmPhone.connected", timeout=10_000)
        answered: list[str] = []
        while (
            state := _wait_for_turn_to_answer(page, [s for s in TYPED_ANSWERS if s not in answered])
        ) is not None:
            how, answer = TYPED_ANSWERS[state]
            if how == "key":
                page.click(f'.key[data-digit="{answer}"]')
            else:
                page.fill("#say-text", answer)
                page.press("#say-text", "Enter")
            answered.append(state)
            page.wait_for_function(
                "(s) => window.voicefsmPhone.lastState !== s || window.voicefsmPhone.status === 'ended'",
                arg=state,
                timeout=15_000,
            )
        page.wait_for_function("() => window.voicefsmPhone.endReason !== null", timeout=10_000)
        call = _snapshot(page)
        assert answered == list(TYPED_ANSWERS), f"answered {answered}; the call went {call['visited']}"
        assert BOOKED_STATE in call["visited"], call["visited"]
        assert call["micStatus"] == "unavailable"
        assert call["framesSent"] > 50  # silence kept the stream alive without a microphone
        assert call["digitsSent"] == 1
        assert call["audioPlayedSamples"] > 0
        asked = [slot["name"] for slot in flow["slots"] if slot["name"] != "offered"]  # offered: when taken
        assert all(call["slots"].get(name) is not None for name in asked), call["slots"]
        typed = [t["text"] for t in call["transcript"] if t["speaker"] == "caller"]
        assert "next tuesday" in typed, typed

        # The call is in the history, with its path, transcript and a playable recording.
        sid = call["callSid"]
        record = _ended_record(booking_server, sid)
        assert any(step["target"] == BOOKED_STATE for step in record["path"]), record["path"]
        page.goto(f"{booking_server}/calls#{sid}")
        page.wait_for_function("() => !document.getElementById('detail-body').hidden", timeout=10_000)
        assert page.locator(f'#calls-body tr[data-call-sid="{sid}"]').count() == 1
        assert page.locator("#detail-transcript li.turn").count() == len(record["transcript"])
        assert BOOKED_STATE in page.text_content("#detail-path")
        if record["recording_url"] is not None:
            page.wait_for_function(
                "() => { const a = document.querySelector('#recording audio'); return a && a.duration > 0; }",
                timeout=10_000,
            )


def _ended_record(base_url: str, call_sid: str) -> dict[str, Any]:
    """The call's record once its end has been written (records are written turn by turn)."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{base_url}/api/calls/{call_sid}", timeout=5.0)
        if response.status_code == 200 and response.json().get("ended_at"):
            record: dict[str, Any] = response.json()
            return record
        if time.monotonic() > deadline:
            pytest.fail(
                f"/api/calls/{call_sid} has no ended_at 10 s after the call ended: {response.text[:300]}"
            )
        time.sleep(0.1)  # polling the HTTP API; bounded by the deadline
