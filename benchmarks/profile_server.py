"""Sample a running server with py-spy and say where its time goes.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;... count``,
each frame ``function (file:line)``, root first. From it: self time by function and by
package (the leaf frame), inclusive time of every function on the stack, and inclusive time of
the engine's per-frame steps. py-spy is optional (``pip install py-spy``); without it the
profile is skipped and the report says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

#: The per-frame steps of the echo path, by the function that does each (inclusive time). A name
#: matches a frame's function exactly or as the last part of its qualified name ("pump" matches
#: "echo_caller.<locals>.pump").
ECHO_STEPS: dict[str, tuple[str, ...]] = {
    "socket read + WebSocket frame parsing (uvicorn protocol)": ("WebSocketsSansIOProtocol.data_received",),
    "receive a frame (uvicorn -> starlette -> transport)": ("TwilioMediaStream.receive",),
    "  of which parsing the frame (parse_inbound)": ("parse_inbound", "parse_message"),
    "Call.put_inbound (recorder tap; the echo's put_outbound)": ("Call.put_inbound",),
    "  of which the recorder's caller mix": ("AudioMixer.tap_caller",),
    "  of which the recorder's agent tap": ("AudioMixer.tap_agent",),
    "send a frame (transport -> starlette -> uvicorn -> socket)": ("TwilioMediaStream.send",),
    "  of which media_message": ("media_message",),
    "recorder writer (disk, batched, worker thread)": (
        "AudioMixer._write_recording",
        "Wave_write.writeframes",
        "_run_writes",
    ),
    "records writer (SQL)": ("RecordWriter._run",),
}

#: Packages, by a fragment of the file path of the leaf frame (first match wins).
PACKAGES: tuple[tuple[str, str], ...] = (
    ("voicefsm/telephony/twilio/media", "voicefsm.telephony.twilio.media (messages)"),
    ("voicefsm/core/wav", "voicefsm.core.wav (recorder mix)"),
    ("voicefsm/core/audio", "voicefsm.core.audio (codec, mix)"),
    ("voicefsm/runtime/recorder", "voicefsm.runtime.recorder"),
    ("voicefsm/", "voicefsm (other)"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("websockets/", "websockets (framing)"),
    ("asyncio/", "asyncio (event loop)"),
    ("numpy/", "numpy"),
    ("sqlalchemy/", "sqlalchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("pydantic", "pydantic"),
    ("wave.py", "wave"),
    ("threading.py", "threading"),
    ("concurrent/", "concurrent.futures"),
)


#: Source lines where a thread sleeps in C (a lock, epoll). py-spy counts threads blocked there as
#: busy in this container (its idle detection fails), so samples whose leaf is one of them are idle.
IDLE_WAITS: tuple[tuple[str, str], ...] = (
    ("concurrent/futures/thread.py", "work_queue.get(block=True)"),
    ("aiosqlite/core.py", "tx.get()"),
    ("selectors.py", "self._selector.poll("),
    ("threading.py", "waiter.acquire("),
    ("threading.py", "lock.acquire(block, timeout)"),
    ("queue.py", "self.not_empty.wait("),
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame; ``name`` leaves the line number out, so a function's lines add up."""

    function: str
    file: str
    line: int = 0

    @property
    def name(self) -> str:
        return f"{self.function} ({self.file})"


def idle_lines() -> set[tuple[str, int]]:
    """(short file, line) of every IDLE_WAITS line, found in this interpreter's sources."""
    found: set[tuple[str, int]] = set()
    roots = [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]
    for short, text in IDLE_WAITS:
        for root in roots:
            path = root / short
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if text in line and not line.lstrip().startswith("#"):
                    found.add((short, number))
            break
    return found


def find_py_spy() -> str | None:
    """The py-spy executable: on PATH, or beside this interpreter."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start_recording(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds``.

    py-spy pauses the process for each sample (a few microseconds at ``rate`` per second): in
    ``--nonblocking`` mode it cannot tell a thread blocked in ``queue.get`` from a busy one, and
    the idle worker threads of aiosqlite and ``asyncio.to_thread`` then show up as CPU time.
    """
    py_spy = find_py_spy()
    if py_spy is None:
        return None
    command = [
        *(py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))),
        *("--rate", str(rate), "--format", "raw", "--output", str(out)),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "?")
    return Frame(match["function"], match["file"], int(match["line"] or 0))


def read_stacks(path: Path) -> list[tuple[list[Frame], int]]:
    """The stacks in a py-spy raw (collapsed) file, root first, with their sample counts."""
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        stacks.append(([parse_frame(part) for part in head.split(";")], int(count)))
    return stacks


def package_of(frame: Frame) -> str:
    for fragment, label in PACKAGES:
        if fragment in frame.file:
            return label
    return frame.file.split("/")[0] if "/" in frame.file else frame.file


def analyze(path: Path, *, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares (% of busy samples) by function, package and echo step."""
    waits = idle_lines()
    every = read_stacks(path)
    stacks = [(frames, count) for frames, count in every if (frames[-1].file, frames[-1].line) not in waits]
    total = sum(count for _, count in stacks)
    idle = sum(count for _, count in every) - total
    if total == 0:
        return {"samples": 0, "idle_samples": idle}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    unattributed = 0
    for frames, count in stacks:
        leaf = frames[-1]
        own[leaf.name] += count
        packages[package_of(leaf)] += count
        names = {frame.function for frame in frames}
        names |= {name.rsplit(".", 1)[-1] for name in names}
        for name in {frame.name for frame in frames}:
            inclusive[name] += count
        matched = False
        for step, functions in ECHO_STEPS.items():
            if names.intersection(functions):
                steps[step] += count
                matched = matched or not step.startswith(" ")
        if not matched:
            unattributed += count

    def share(counter: Counter[str], limit: int | None = top) -> list[tuple[str, float]]:
        return [(name, round(100.0 * count / total, 1)) for name, count in counter.most_common(limit)]

    return {
        "samples": total,
        "idle_samples": idle,
        "self_by_package_pct": share(packages, None),
        "self_by_function_pct": share(own),
        "inclusive_by_function_pct": share(inclusive, top * 2),
        "echo_steps_pct": [(step, round(100.0 * steps[step] / total, 1)) for step in ECHO_STEPS]
        + [
            (
                "none of the above (event loop: select, timers, task switches; GC)",
                round(100.0 * unattributed / total, 1),
            )
        ],
    }


def render(analysis: dict[str, Any], us_per_frame: float | None) -> str:
    """A plain-text report; with ``us_per_frame`` (server CPU per echoed frame) shares become microseconds."""
    if not analysis.get("samples"):
        return "no samples\n"

    def cost(pct: float) -> str:
        return f"{pct:5.1f}%" + (f"  {pct * us_per_frame / 100:6.1f} us/frame" if us_per_frame else "")

    lines = [
        f"busy samples: {analysis['samples']} (idle threads' samples dropped: {analysis['idle_samples']})",
        "",
        "echo path, inclusive:",
    ]
    lines += [f"  {cost(pct)}  {step}" for step, pct in analysis["echo_steps_pct"]]
    lines += ["", "self time by package:"]
    lines += [f"  {cost(pct)}  {name}" for name, pct in analysis["self_by_package_pct"]]
    lines += ["", "self time by function:"]
    lines += [f"  {cost(pct)}  {name}" for name, pct in analysis["self_by_function_pct"]]
    lines += ["", "inclusive time by function:"]
    lines += [f"  {cost(pct)}  {name}" for name, pct in analysis["inclusive_by_function_pct"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(analyze(Path(sys.argv[1])), float(sys.argv[2]) if len(sys.argv) > 2 else None))
