"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests (the Dagster instance, the DuckLake catalog).

initdb refuses to run as root, so as root the cluster belongs to `nobody`. `running_postgres` skips
the test when no PostgreSQL binaries are found, fails it in CI (`.ci/run` installs the Debian
`postgresql` package: support/tools.py), and stops the server afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from market_pipeline_tests.support.tools import missing_tool

UNPRIVILEGED = "nobody"  # the cluster's owner when the tests run as root


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str  # a superuser, trusted without a password on loopback
    root: Path  # the cluster and its log

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()

    def libpq(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={self.user}"


def pg_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH, then Debian's /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    candidates += [Path(p) for p in reversed(versions)]
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(argv: list[str]) -> list[str]:
    """Run argv as the cluster's owner: ourselves, or `nobody` when we are root."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", UNPRIVILEGED, "--", *argv]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--reuid", UNPRIVILEGED, "--regid", "nogroup", "--clear-groups", *argv]
    missing_tool("runuser", "running as root and neither runuser nor setpriv drops privileges for initdb")


@contextmanager
def running_postgres(user: str = "dagster") -> Iterator[Postgres]:
    """A fresh cluster on 127.0.0.1 and a free port, superuser `user`; skips the test without binaries
    (fails it in CI)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        missing_tool("postgresql", "no initdb, pg_ctl and postgres on PATH or in /usr/lib/postgresql/*/bin")
    # Not under pytest's tmp dirs: those are 0700 root, which the unprivileged owner cannot enter.
    root = Path(tempfile.mkdtemp(prefix="mp_pg_"))
    cluster, log = root / "cluster", root / "postgres.log"
    cluster.mkdir()
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam(UNPRIVILEGED)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(cluster, owner.pw_uid, owner.pw_gid)
    os.chmod(root, 0o755)
    port = free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(cluster), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"]
    done = subprocess.run(_as_owner(initdb), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        missing_tool("initdb", f"initdb failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={cluster} -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(cluster), "-l", str(log), "-o", options, "-w", "-t", "60"]
    started = subprocess.run(_as_owner([*pg_ctl, "start"]), capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        text = log.read_text() if log.is_file() else started.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {text[-1000:]}")
    try:
        yield Postgres("127.0.0.1", port, user, root)
    finally:
        subprocess.run(_as_owner([*pg_ctl, "-m", "fast", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
