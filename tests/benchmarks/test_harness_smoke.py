"""The benchmark harness runs end to end and produces numbers (never asserts speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def test_smoke_run_produces_every_number(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))

    micro = results["micro"]
    for value in (
        micro["codec"]["encode_us_per_frame"],
        micro["codec"]["decode_msamples_per_s_bulk"],
        micro["messages"]["parse_media_us"],
        micro["messages"]["build_media_us"],
        micro["engine_path"]["echo_frame_us"],
        micro["media_loop_echo"]["cpu_us_per_frame"],
        micro["flow_send"]["send_us"],
        micro["idle_call_memory"]["call_plus_flow_runtime_kib"],
    ):
        assert _number(value) and value > 0

    assert {run["variant"] for run in results["capacity"]} == {"voicefsm", "floor"}
    for run in results["capacity"]:
        step = run["steps"][0]
        assert step["calls_failed"] == 0, step["errors"]
        assert step["frames_measured"] > 0
        assert _number(step["frames_lost"])
        assert all(_number(step["latency_ms"][key]) for key in ("p50", "p99", "max"))
        assert _number(step["server_cpu_s"]) and _number(step["rss_loaded_mib"])

    booking = results["booking"]
    assert booking["turns"] > 0
    assert booking["turn_latency_ms"]["count"] > 0
    assert all(_number(booking["turn_latency_ms"][key]) for key in ("p50", "p99"))
    latency = results["latency"]
    assert latency["runs"], "the response-latency run measured nothing"
    for run in latency["runs"]:
        assert run["calls_completed"] == run["calls"], run["errors"]
        assert run["ring_to_greeting_ms"]["count"] == run["calls"]
        assert run["turn_latency_ms"]["count"] > 0
        assert run["tts_requests_total"] > 0  # the provider really went to the stand-in
    assert "Capacity on one core" in completed.stdout
    assert "Response latency" in completed.stdout
    assert "Targets (issues #8 and #17)" in completed.stdout

    rendered = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--render", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert rendered.stdout.strip() in completed.stdout  # the saved JSON reprints the same tables
