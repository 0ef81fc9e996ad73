"""The local recognizer's worker processes end with the server, even when it is killed (SIGKILL)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("pocketsphinx")

SERVER = textwrap.dedent(
    """
    import sys, time
    from voicefsm.providers import local_decoder

    pool = local_decoder._pool_now()
    assert pool.submit(local_decoder._ready).result(timeout=60)
    print(" ".join(str(pid) for pid in pool._processes), flush=True)
    time.sleep(120)
    """
)


def test_decoder_workers_exit_when_the_server_is_killed() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert server.stdout is not None
        workers = [int(pid) for pid in server.stdout.readline().split()]
        assert workers, "the pool started no worker"
        watched = [os.pidfd_open(pid) for pid in workers]  # readable once that process has exited
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    try:
        still_running = set(watched)
        for _ in range(len(watched)):
            ready, _, _ = select.select(list(still_running), [], [], 10.0)
            still_running -= set(ready)
            if not still_running:
                break
        assert not still_running, "a decoder worker outlived its killed server"
    finally:
        for fd in watched:
            os.close(fd)
