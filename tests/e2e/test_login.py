"""A production-configured server in headless Chromium: log in, call from the browser phone, see the call.

The server runs ``voicefsm serve flows/booking.py`` with a Twilio auth token and an https public URL,
so every page and the API need a login; the browser phone's stream goes through its ticket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from e2e.browser import chromium_missing_reason, launch_chromium
from e2e.test_browser_phone import BOOKING_FLOW, _free_port, _wait_until_serving

TOKEN = "e2e-login-token-0123456789"

_MISSING = chromium_missing_reason()
if _MISSING is not None and os.environ.get("VOICEFSM_REQUIRE_BROWSER"):
    raise RuntimeError(f"the browser tests must run here, but {_MISSING}")
pytestmark = [pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""), pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def production_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("production_server")
    log = workdir / "server.log"
    port = _free_port()
    # "localhost": a browser keeps Secure cookies for it over plain http, as it does behind TLS.
    base_url = f"http://localhost:{port}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICE"))
    }
    env.update(
        TWILIO_AUTH_TOKEN="e2e-twilio-secret",
        VOICEFSM_API_TOKENS=TOKEN,
        VOICEFSM_SECRET_KEY="e2e-session-key",
        VOICEFSM_RECORDINGS_DIR=str(workdir / "recordings"),
    )
    command = [sys.executable, "-m", "voicefsm", "serve", str(BOOKING_FLOW), "--port", str(port)]
    command += ["--public-url", "https://voice.example.test"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(base_url, process, log)
        assert httpx.get(f"{base_url}/api/calls", timeout=5.0).status_code == 401
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        server_log = log.read_text(errors="replace")
        assert TOKEN not in server_log and "e2e-twilio-secret" not in server_log


def test_log_in_call_from_the_browser_phone_and_see_the_call_listed(production_server: str) -> None:
    with launch_chromium(allow_microphone=False) as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{production_server}/calls")
        assert page.url == f"{production_server}/login?next=%2Fcalls"

        page.fill("#token", "not-the-token")
        page.click("#login")
        page.wait_for_selector("#login-error:not([hidden])")
        assert "not valid" in page.text_content("#login-error")

        page.fill("#token", TOKEN)
        page.click("#login")
        page.wait_for_url(f"{production_server}/calls")
        page.wait_for_selector("#logout")

        # The browser phone works once logged in: its stream is admitted by ticket, the agent speaks.
        page.goto(f"{production_server}/")
        page.wait_for_function("() => window.voicefsmPhone && window.voicefsmPhone.flow !== null")
        page.click("#call")
        page.wait_for_function("() => window.voicefsmPhone.connected", timeout=15_000)
        page.wait_for_function("() => window.voicefsmPhone.marksEchoed >= 1", timeout=20_000)
        call_sid = page.evaluate("() => window.voicefsmPhone.callSid")
        page.click("#hangup")
        page.wait_for_function("() => window.voicefsmPhone.status === 'ended'", timeout=10_000)

        page.goto(f"{production_server}/calls")
        page.wait_for_selector(f'#calls-body tr[data-call-sid="{call_sid}"]', timeout=10_000)
        assert errors == []

        page.click("#logout")
        page.wait_for_url(f"{production_server}/login")
        page.goto(f"{production_server}/calls")
        assert page.url.startswith(f"{production_server}/login")
