"""Real ``mailer worker`` processes on a test's outbox (test_crash, test_worker_summary):
its config file, messages enqueued from this process, the rows' states, and a worker
started and stopped with SIGTERM, its stderr kept in a file. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio

from mailer import Mailer
from mailer.testing import wait_until

from .conftest import fast_outbox, make_message, rows, smtp_entry

HERE = Path(__file__).parent


def write_config(tmp_path: Path, port: int, url: str, **outbox: Any) -> tuple[Path, str]:
    config = {
        "providers": [smtp_entry("smtp", port, 1)],
        "retry": {"attempts": 1},
        "outbox": fast_outbox(url, **outbox),
    }
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(config))
    return path, url


def enqueue(config: Path, n: int) -> list[str]:
    async def go() -> list[str]:
        async with Mailer.from_config(config) as mailer:
            return [await mailer.enqueue(make_message(i)) for i in range(n)]

    return anyio.run(go, backend="asyncio")


def states(url: str) -> dict[str, str]:
    return {row["message_id"]: row["state"] for row in rows(url)}


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll a database query: every 50 ms rather than the kit's default 10 ms."""
    return wait_until(predicate, timeout, interval=0.05)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE.parents[1])}


#: each worker's stderr, by pid: a file rather than a pipe, since a pipe nobody reads
#: fills up (the worker logs a record per message) and then blocks the worker
_LOGS: dict[int, IO[bytes]] = {}


def start_worker(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer", "worker", "--config", str(config), *extra],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env(),
    )
    _LOGS[proc.pid] = log
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the worker did not stop within 30 s of SIGTERM") from None
    log = _LOGS.pop(proc.pid)
    log.seek(0)
    stderr = log.read()
    log.close()
    return proc.returncode, stderr.decode(errors="replace")
