"""The browser phone's statechart at 1280x800: every state on screen, counted as `validate` counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.browser import chromium_missing_reason, launch_chromium

from voicefsm.cli import flow_counts
from voicefsm.flow.loader import load_flow

REPO = Path(__file__).resolve().parents[2]
BOOKING = REPO / "flows" / "booking.py"
READY = re.compile(r"on (http://127\.0\.0\.1:\d+)")
WIDTH, HEIGHT = 1280, 800

_MISSING = chromium_missing_reason()
if _MISSING is not None and os.environ.get("VOICEFSM_REQUIRE_BROWSER"):  # set by scripts/test.sh (CI)
    raise RuntimeError(f"the browser tests must run here, but {_MISSING}")
pytestmark = [pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""), pytest.mark.timeout(60)]


@pytest.fixture
def booking_url(tmp_path: Path) -> Iterator[str]:
    """A dev-mode `voicefsm serve flows/booking.py` on a free port; its URL once it says it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ELEVENLABS_", "AZURE_"))}
    env["VOICEFSM_RECORDINGS_DIR"] = str(tmp_path / "recordings")
    process = subprocess.Popen(
        [sys.executable, "-m", "voicefsm", "serve", str(BOOKING), "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # bounded by the test timeout; ends if the server exits
            if found := READY.search(line):
                yield found.group(1)
                break
        else:
            pytest.fail(f"`voicefsm serve` exited with {process.wait()} before serving")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def test_the_whole_statechart_is_on_a_1280x800_screen_and_counted_as_validate_counts(
    booking_url: str,
) -> None:
    counts = flow_counts(load_flow(BOOKING))
    with launch_chromium(allow_microphone=False) as context:
        page = context.new_page()
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
        page.goto(f"{booking_url}/")
        page.wait_for_selector(".diagram-svg .node")
        nodes = page.locator(".diagram-svg .node")
        assert nodes.count() == counts["states"] + counts["default_states"]
        for index in range(nodes.count()):
            box = nodes.nth(index).bounding_box()
            assert box is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, nodes.nth(index).get_attribute(
                "data-state"
            )
            assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, nodes.nth(index).get_attribute(
                "data-state"
            )
        caption = page.locator(".diagram-counts").inner_text()
    assert caption.startswith(
        f"{counts['states']} states, {counts['transitions']} transitions as written "
        f"(+{counts['default_states']} states and {counts['default_transitions']} exits every flow gets"
    )
