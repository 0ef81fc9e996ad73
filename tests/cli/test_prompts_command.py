"""``voicefsm prompts FLOW [--warm]``: the fixed prompts of a flow, their audio cached before deployment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from voicefsm.flow.loader import load_flow
from voicefsm.flow.prompts import fixed_texts

FLOWS = Path(__file__).resolve().parents[2] / "flows"
BOOKING = FLOWS / "booking.py"
#: The booking flow's distinct fixed prompt texts (it grows as the flow does: its calendar steps, its limits).
FIXED = len(set(fixed_texts(load_flow(BOOKING))))


def voicefsm(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "voicefsm", "prompts", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prompts_lists_the_fixed_prompts_of_a_flow(tmp_path: Path) -> None:
    done = voicefsm(str(BOOKING), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        re.search(r"^greet +prompt ", done.stdout, re.MULTILINE)
        and "Hi, this is Bright Smile Dental." in done.stdout
    )
    assert "What time on" not in done.stdout  # templated: depends on the call
    assert f"{FIXED} fixed prompts ({FIXED} distinct texts)" in done.stdout


def test_prompts_warm_synthesizes_them_once_with_local_speech_and_lists_their_lengths(
    tmp_path: Path, private_prompt_cache: Path
) -> None:
    first = voicefsm(str(BOOKING), "--warm", "--tts", "local", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"{FIXED}/{FIXED} warmed: {FIXED} synthesized, 0 from the cache" in first.stderr
    greeting = next(line for line in first.stdout.splitlines() if "Bright Smile" in line)
    seconds = float(greeting.split()[2])
    assert 1.0 < seconds < 5.0, greeting  # espeak-ng says the greeting in about two seconds
    assert "synthesized" in greeting
    assert len(list(private_prompt_cache.rglob("*.ulaw"))) == FIXED
    again = voicefsm(str(BOOKING), "--warm", "--tts", "local", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"0 synthesized, {FIXED} from the cache" in again.stderr
    assert "disk" in next(line for line in again.stdout.splitlines() if "Bright Smile" in line)


def test_prompts_warm_without_the_provider_s_credentials_says_what_to_set(tmp_path: Path) -> None:
    done = voicefsm(str(BOOKING), "--warm", "--tts", "elevenlabs", cwd=tmp_path, ELEVENLABS_API_KEY="")
    assert done.returncode == 1
    assert "no prompt could be synthesized" in done.stdout and "ELEVENLABS_API_KEY" in done.stdout
