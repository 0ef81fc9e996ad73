"""The soak command runs end to end on a real ``voicefsm serve`` (50 calls) and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fifty_calls_through_a_served_instance_report_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    size = ["--calls", "50", "--warmup", "10", "--concurrency", "4", "--checkpoint", "25"]
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), *size, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr[-3000:]  # 1: a verdict, not a crash
    figures = json.loads(out.read_text(encoding="utf-8"))
    start, warm, *checkpoints = figures["samples"]
    assert [sample["calls_done"] for sample in checkpoints] == [25, 50]
    # Every call went through the flow and ended as it should; the records hold each call once.
    assert figures["failures"] == {}
    assert figures["outcomes"] == {"confirmed": 60}
    end = checkpoints[-1]
    assert (start["rows"]["calls"], warm["rows"]["calls"], end["rows"]["calls"]) == (0, 10, 60)
    assert end["rows"]["transitions"] == 4 * end["rows"]["calls"]
    assert end["unfinished_calls"] == 0
    # The figures the soak judges are all there (their growth over 50 calls is not judged here).
    for sample in (start, warm, end):
        assert sample["fds"] > 0 and sample["tasks"] > 0 and sample["threads"] > 0 and sample["rss_kib"] > 0
    assert "fds" in completed.stdout and ("PASSED" in completed.stdout or "FAILED" in completed.stdout)
