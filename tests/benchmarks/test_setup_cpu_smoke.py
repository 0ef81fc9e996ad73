"""The direct set-up measurement runs end to end on a real ``voicefsm serve`` and on the floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_few_calls_set_up_on_both_servers_and_their_cpu_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "setup.json"
    completed = subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "setup_cpu.py"), "--calls", "3"),
            *("--variant", "voicefsm", "--variant", "floor", "--json", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {result["variant"]: result for result in json.loads(out.read_text(encoding="utf-8"))}
    # voicefsm's calls were greeted (each had its greeting's mark echoed) within the deadline, and the
    # server did work for them: a call's set-up is never free.
    assert results["voicefsm"]["calls"] == 3 and results["voicefsm"]["cpu_s"] > 0
    assert results["floor"]["calls"] == 3
    assert "ms CPU per call" in completed.stdout
