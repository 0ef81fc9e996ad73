"""``voicefsm serve --workers N``: N worker processes taking calls on one port, as one server.

The supervisor (this module, in the process the operator started) binds the port once, then starts
N ``voicefsm serve`` processes that accept on that same socket (the kernel hands each connection to
one of them). Each worker is a complete server: its own start-up checks, records, leases and drain.
Every worker has a stable name (``VOICEFSM_WORKER_NAME``, default ``host:port``, plus ``/1`` ...
``/N``), so one that dies is started again under its name and recovers its own unfinished calls.

- Start: the supervisor waits until every worker says it is listening, then prints the banner. A
  worker that exits before (a schema behind, an unreachable database) stops the others, and the
  supervisor exits with its code: the worker printed why.
- SIGTERM or SIGINT: passed to every worker, which drains as a single server does; the supervisor
  exits when they all have (0 if they all did).
- A worker that dies while serving (killed, out of memory) is started again under its name, unless
  it dies again before it is ready; then everything stops.
- The supervisor killed (even by SIGKILL): each worker sees its link to it close and drains.

The workers share one records database, which must be PostgreSQL (SQLite is one file on one host:
refused with N > 1 by the command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: The environment a worker reads (set only by the supervisor): the listening socket's fd, and the
#: fd of its link to the supervisor (it writes "ready" there; the link closing means the supervisor died).
LISTEN_FD = "VOICEFSM_LISTEN_FD"
LINK_FD = "VOICEFSM_SUPERVISOR_FD"
WORKER_INDEX = "VOICEFSM_WORKER_INDEX"
READY = b"ready\n"


@dataclass(slots=True)
class _Worker:
    index: int
    name: str
    process: asyncio.subprocess.Process | None = None
    link: socket.socket | None = None
    ready: bool = False
    restarts: int = 0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every worker accepts on (raises OSError when the port cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_names(base: str, count: int) -> list[str]:
    """``base/1`` ... ``base/count``: stable across restarts, unique on the database if ``base`` is."""
    return [f"{base}/{index}" for index in range(1, count + 1)]


class Supervisor:
    """Runs ``command`` (a ``voicefsm serve`` without ``--workers``) as N workers on ``sock``."""

    def __init__(
        self,
        command: Sequence[str],
        sock: socket.socket,
        names: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.command = list(command)
        self.sock = sock
        self.workers = [_Worker(index, name) for index, name in enumerate(names, start=1)]
        self.env = dict(os.environ if env is None else env)
        self.on_ready = on_ready
        self.stopping = False
        self._changed = asyncio.Event()

    async def run(self) -> int:
        """Start the workers, serve until told to stop, return the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            for worker in self.workers:
                await self._start(worker)
            code = await self._until_ready()
            if code is not None:
                return code
            if self.on_ready is not None:
                self.on_ready()
            return await self._serve()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if not self.stopping:  # run() failed: leave no worker behind
                self.stop()
            await self._reap()

    def stop(self) -> None:
        """Drain every worker (SIGTERM), then return from :meth:`run`."""
        self.stopping = True
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        self._changed.set()

    async def _start(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        env = {
            **self.env,
            LISTEN_FD: str(self.sock.fileno()),
            LINK_FD: str(theirs.fileno()),
            WORKER_INDEX: str(worker.index),
            "VOICEFSM_WORKER_NAME": worker.name,
        }
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self.command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(self.sock.fileno(), theirs.fileno()),
            )
        finally:
            theirs.close()
        worker.link, worker.ready = ours, False
        worker.waiter = asyncio.get_running_loop().create_task(
            self._watch(worker, worker.process, ours), name=f"voicefsm-worker-{worker.index}"
        )

    async def _watch(self, worker: _Worker, process: asyncio.subprocess.Process, link: socket.socket) -> int:
        """Note when ``worker`` is ready (its link says so), then when it exits; returns its code."""
        reader, writer = await asyncio.open_connection(sock=link)
        try:
            wait = asyncio.ensure_future(process.wait())
            ready = asyncio.ensure_future(reader.readline())
            done, _ = await asyncio.wait({wait, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready in done and ready.result() == READY:
                worker.ready = True
                if worker.restarts:
                    print(f"worker {worker.name} is taking calls again", file=sys.stderr, flush=True)
                self._changed.set()
            else:
                ready.cancel()
            code = await wait
        finally:
            writer.close()
        self._changed.set()
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            return 0  # told to stop while it was still starting (before its handlers): a clean stop
        return code

    async def _until_ready(self) -> int | None:
        """None once every worker is ready; the exit code of one that ended first (after stopping all)."""
        while True:
            for worker in self.workers:
                process = worker.process
                if process is not None and process.returncode is not None and not worker.ready:
                    self.stop()
                    return _status(process.returncode) or 1
            if self.stopping:
                return 0
            if all(worker.ready for worker in self.workers):
                return None
            self._changed.clear()
            await self._changed.wait()

    async def _serve(self) -> int:
        while not self.stopping:
            self._changed.clear()
            for worker in self.workers:
                process = worker.process
                if process is None or process.returncode is None:
                    continue
                if not worker.ready:  # died again before it was ready: something is wrong for good
                    log.error(
                        "worker %s exited (%s) before it was ready; stopping", worker.name, _how(process)
                    )
                    self.stop()
                    return _status(process.returncode) or 1
                worker.restarts += 1
                print(
                    f"worker {worker.name} exited ({_how(process)}); restarting it; it recovers its calls",
                    file=sys.stderr,
                    flush=True,
                )
                await self._start(worker)
            if not self.stopping:
                await self._changed.wait()
        return 0

    async def _reap(self) -> int:
        codes = []
        for worker in self.workers:
            if worker.waiter is not None:
                codes.append(await worker.waiter)
        return next((_status(code) for code in codes if code), 0)

    async def exit_code(self) -> int:
        """After :meth:`run`: 0 when every worker drained and exited cleanly."""
        return await self._reap()


def _status(code: int | None) -> int:
    """A worker's return code as the supervisor's exit status: 128 + N for a worker killed by signal N."""
    if code is None or code == 0:
        return 1 if code is None else 0
    return 128 - code if code < 0 else code


def _how(process: asyncio.subprocess.Process) -> str:
    code = process.returncode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def supervise(
    command: Sequence[str], sock: socket.socket, names: Sequence[str], on_ready: Callable[[], None]
) -> int:
    """Run the workers until SIGTERM/SIGINT; the exit code is 0 when they all drained cleanly."""

    async def main() -> int:
        supervisor = Supervisor(command, sock, names, on_ready=on_ready)
        code = await supervisor.run()
        return code or await supervisor.exit_code()

    try:
        return asyncio.run(main())
    finally:
        sock.close()


# -- in a worker -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Supervised:
    """What a worker started by a supervisor was handed: the socket, and its link to the supervisor."""

    sock: socket.socket
    link: socket.socket
    index: int

    def ready(self) -> None:
        """Tell the supervisor this worker is listening."""
        with contextlib.suppress(OSError):
            self.link.sendall(READY)

    def ready_with(self, _server: object) -> None:
        """:meth:`ready`, as the server's on-ready callback."""
        self.ready()

    def watch_supervisor(self) -> None:
        """Drain (SIGTERM to itself) when the supervisor is gone, however it went."""

        def watch() -> None:
            with contextlib.suppress(OSError):
                while self.link.recv(64):
                    pass
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="voicefsm-supervisor-watch", daemon=True).start()


def supervised(environ: dict[str, str] | os._Environ[str]) -> Supervised | None:
    """The supervisor's hand-over when this process is one of its workers, else None."""
    listen, link = environ.get(LISTEN_FD), environ.get(LINK_FD)
    if not listen or not link:
        return None
    return Supervised(
        socket.socket(fileno=int(listen)),
        socket.socket(fileno=int(link)),
        int(environ.get(WORKER_INDEX, "1")),
    )
