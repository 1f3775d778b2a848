"""A real Redis server for tests: started on a free loopback port in a temp folder, stopped
at the end (and stoppable mid-test, to test the degraded mode).

``make pytest`` installs redis-server with apt-get when it is missing (as root, as CI is).
A missing server fails the tests that need it, with the fix, unless apt-get itself is not
available on this machine: then they skip and say so.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mailer.testing import free_port

__all__ = ["RedisServer", "require_redis_server"]


def require_redis_server() -> str:
    """The redis-server binary, or skip/fail with why."""
    found = shutil.which("redis-server")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip(
            "redis-server is not installed and apt-get is not available here to "
            "install it: the shared health store tests need a real Redis"
        )
    pytest.fail(
        "redis-server is not installed: run `make pytest` (it installs it with "
        "apt-get as root) or `apt-get install redis-server`"
    )
    raise AssertionError("unreachable")


class RedisServer:
    """One redis-server process on 127.0.0.1; ``stop()`` and ``start()`` keep the port."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
            "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start: {log}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
