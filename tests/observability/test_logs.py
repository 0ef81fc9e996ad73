"""Log lines: JSON objects with the call SID of the call they were logged for; numbers and secrets masked."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from voicefsm.observability import bind_call, current_call
from voicefsm.observability.logs import Redactor, configure_logging, logging_configured
from voicefsm.runtime.step_pool import StepPool
from voicefsm.telephony.twilio.client import TwilioStreamClient

ROOT = Path(__file__).resolve().parents[2]
CALL = "CA" + "0123456789abcdef" * 2
CALLER = "+15551234567"
TOKEN = "sk_live_0123456789abcdefSECRET"
log = logging.getLogger("voicefsm.tests.observability")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer (the handler removed afterwards)."""
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    handler = configure_logging("json", level=logging.INFO, secrets=[TOKEN], stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_the_call_sid_during_a_call(
    json_lines: io.StringIO,
) -> None:
    log.info("before the call")
    with bind_call(CALL):
        assert current_call() == CALL
        log.warning("during the call: %d prompts", 3)
        try:
            raise ValueError("the step broke")
        except ValueError:
            log.exception("a step failed")
    assert current_call() is None
    outside, during, failed = lines(json_lines)

    assert set(outside) == {"time", "level", "logger", "message"}
    assert (outside["level"], outside["logger"]) == ("INFO", log.name)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(outside["time"]))
    assert (during["message"], during["call_sid"], during["level"]) == (
        "during the call: 3 prompts",
        CALL,
        "WARNING",
    )
    assert failed["call_sid"] == CALL
    assert "ValueError: the step broke" in str(failed["exception"])
    assert "Traceback" in str(failed["exception"])


def test_phone_numbers_and_secrets_never_reach_a_line(json_lines: io.StringIO) -> None:
    with bind_call(CALL):
        log.warning("caller %s pressed 1; token %s; header Bearer %s", CALLER, TOKEN, "abcdefghijklmnop")
        log.warning("bare number 15551234567 and grouped +1 555-123-4567")
        try:
            raise ConnectionError(f"refused for {CALLER} with {TOKEN}")
        except ConnectionError:
            log.exception("provider failed")
    text = json_lines.getvalue()
    assert CALLER not in text and "15551234567" not in text and "555-123-4567" not in text
    assert TOKEN not in text and "abcdefghijklmnop" not in text
    first, second, third = lines(json_lines)
    assert first["message"] == "caller [number] pressed 1; token [secret]; header Bearer [secret]"
    assert second["message"] == "bare number [number] and grouped [number]"
    assert "refused for [number] with [secret]" in str(third["exception"])
    # What is not a number stays: the call SID, times, durations, ports.
    assert first["call_sid"] == CALL


def test_the_redactor_leaves_sids_times_and_counts_alone() -> None:
    redact = Redactor()
    text = f"{CALL} at 2025-03-01 09:00:00.123456 took 0.1234567891 s on port 8080, 12 records"
    assert redact(text) == text


async def test_the_step_pool_threads_and_marshalled_callbacks_carry_the_call_sid(
    json_lines: io.StringIO,
) -> None:
    pool = StepPool(2, name="test-step")
    loop = asyncio.get_running_loop()
    called = asyncio.Event()
    try:
        with bind_call(CALL):
            await pool.run(log.warning, "from a sync step")
            context = contextvars.copy_context()  # what an SDK adapter captures when the call starts it

        def sdk_thread() -> None:  # an SDK's own thread: no call context, so it hands over the captured one
            loop.call_soon_threadsafe(
                lambda: (log.warning("from an SDK callback"), called.set()), context=context
            )

        thread = threading.Thread(target=sdk_thread)
        thread.start()
        async with asyncio.timeout(5):
            await called.wait()
        thread.join()
    finally:
        pool.shutdown()
    step, callback = lines(json_lines)
    assert (step["message"], step["call_sid"]) == ("from a sync step", CALL)
    assert (callback["message"], callback["call_sid"]) == ("from an SDK callback", CALL)


def test_text_stays_the_default_and_tags_call_lines(json_lines: io.StringIO) -> None:
    stream = io.StringIO()
    handler = configure_logging(level=logging.INFO, stream=stream)
    try:
        assert logging_configured()
        with bind_call(CALL):
            log.info("in a call from %s", CALLER)
        log.info("no call")
    finally:
        logging.getLogger().removeHandler(handler)
    during, outside = stream.getvalue().splitlines()
    assert during.endswith(f"INFO {log.name} [{CALL}]: in a call from [number]")
    assert outside.endswith(f"INFO {log.name}: no call")


def test_an_unknown_log_format_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("yaml")  # type: ignore[arg-type]


# -- served: `voicefsm serve --log-format json`, a call from a number, the lines grepped ------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(base: str, server: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            assert server.poll() is None, "the server exited before it was ready"
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # polling a starting process: nothing else signals readiness


async def phone(base: str, call_sid: str, caller: str, *, press: bool = True) -> TwilioStreamClient:
    """Twilio's webhook from ``caller``, then its media stream: the greeting heard, a key pressed, stop
    (without ``press``: until the flow hangs up)."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{base}/twilio/voice",
            data={"CallSid": call_sid, "From": caller, "To": "+15557654321", "AccountSid": "AC" + "cd" * 16},
        )
    match = re.search(r'name="token" value="([^"]+)"', answer.text)
    assert match, answer.text
    twilio = TwilioStreamClient(
        base.replace("http://", "ws://") + "/twilio/stream",
        call_sid=call_sid,
        custom_parameters={"token": match.group(1)},
    )
    await twilio.open()
    await twilio.wait_until(lambda: bool(twilio.played_marks), timeout_s=20)
    if press:
        await twilio.press("1")
        await twilio.stop()
    await twilio.wait_closed(timeout_s=20)
    await twilio.close()
    return twilio


def serve(
    tmp_path: Path,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
    flow: Path = ROOT / "flows" / "booking.py",
) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "VOICEFSM_DB_URL": f"sqlite:///{tmp_path / 'calls.db'}",
        "VOICEFSM_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "VOICEFSM_PROMPT_CACHE": "false",
        "TWILIO_AUTH_TOKEN": "",
        **(env or {}),
    }
    environment.pop("TWILIO_AUTH_TOKEN")
    command = [sys.executable, "-m", "voicefsm", "-v", "serve", str(flow)]
    command += ["--port", str(port), "--stt", "scripted", "--tts", "scripted", *extra]
    return subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


CARELESS_FLOW = """
import logging

from voicefsm.flow import Hangup, Say, VoiceFlow

log = logging.getLogger("careless.flow")


class Careless(VoiceFlow):
    hello = Say("Hello.", initial=True, barge_in=False)
    bye = Hangup("Goodbye.")

    spoken = hello.to(bye)

    def on_enter_hello(self) -> None:
        log.warning("a call from %s", self.caller)  # a flow author's slip: the number goes to the log
"""


async def test_served_json_logs_carry_the_call_sid_and_never_the_callers_number(tmp_path: Path) -> None:
    flow = tmp_path / "careless.py"
    flow.write_text(CARELESS_FLOW)
    port = free_port()
    server = serve(tmp_path, port, "--log-format", "json", flow=flow)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, server)
        await phone(base, CALL, CALLER, press=False)
    finally:
        server.terminate()
        _, stderr = await asyncio.to_thread(server.communicate, timeout=60)
    assert server.returncode == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert entries
    ended = [e for e in entries if "call ended" in str(e["message"])]
    assert ended and all(e.get("call_sid") == CALL for e in ended)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert CALLER not in stderr and CALLER[1:] not in stderr
    (slip,) = [e for e in entries if e["logger"] == "careless.flow"]
    assert (slip["message"], slip["call_sid"]) == ("a call from [number]", CALL)
