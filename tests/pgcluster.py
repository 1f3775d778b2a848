"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temporary
folder, started on a free loopback port, stopped and deleted afterwards.

Postgres refuses to run as root, so when the suite runs as root (CI does) the cluster
belongs to an unprivileged user (``nobody``) and its commands run through ``runuser``.
The Makefile installs postgresql with apt-get when it is missing; :func:`find_bin` says
why when it still cannot be found, and the tests that need it are skipped with that.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresCluster", "find_bin"]


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (Debian keeps them off PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return versions[0].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """``with PostgresCluster() as pg: pg.dsn``: a fresh cluster, user ``mailer``, trust
    authentication on 127.0.0.1 only."""

    user = "mailer"

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bin()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (initdb not found)")
        self.bindir = found
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        self.data = self.root / "data"
        self.run_as = "nobody" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def start(self) -> PostgresCluster:
        if self.run_as:
            shutil.chown(self.root, user=self.run_as)
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                      "--no-sync", "-E", "UTF8", "--locale=C"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=on -c max_connections=200 -c shared_buffers=64MB"
        )
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "60",
                      "-l", str(self.root / "log"), "start"),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError("the test PostgreSQL cluster did not start listening")

    def stop(self) -> None:
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
