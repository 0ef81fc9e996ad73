"""CPU time and resident memory of a process, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading: CPU seconds used so far (user + system, all threads) and resident set size."""

    cpu_s: float
    rss_bytes: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used, all threads included."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        text = file.read()
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / _TICKS_PER_S


def thread_cpu_seconds(pid: int) -> float:
    """CPU seconds the live threads of ``pid`` have run, to the nanosecond (/proc/<pid>/task/*/schedstat).

    :func:`cpu_seconds` counts in clock ticks (10 ms), too coarse for a few milliseconds per call
    over a second or two. A thread that has exited takes its time with it: use this across spans in
    which the process keeps its threads (a server's pools do).
    """
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as file:
                total_ns += int(file.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread ended between listing and reading
            continue
    return total_ns / 1e9


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM ...), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} is not in /proc/{pid}/status")


def sample(pid: int) -> ProcSample:
    """CPU seconds and RSS of ``pid`` now."""
    return ProcSample(cpu_seconds(pid), status_kib(pid, "VmRSS") * 1024)


def core_busy_seconds(core: int) -> float:
    """Seconds core ``core`` has spent busy (anything but idle and iowait), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as file:
        for line in file:
            if line.startswith(f"cpu{core} "):
                values = [int(value) for value in line.split()[1:]]
                idle = values[3] + values[4]
                # guest time is already counted in user/nice, so only the first 8 fields add up
                return (sum(values[:8]) - idle) / _TICKS_PER_S
    raise KeyError(f"no cpu{core} line in /proc/stat")
