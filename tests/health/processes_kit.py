"""Real worker processes for the shared-store tests (test_processes, test_rate_lease):
started together, watched while they run, their results read back. Every wait is bounded.

Each worker (tests/health/worker.py) builds a Mailer from a config, waits for a go file,
sends, and writes what it saw. While it runs it appends its log lines to a live log, so a
test waits for what every process has *seen* (``Workers.wait_logged``: the store
unreachable, reachable again, a breaker opened) instead of sleeping for as long as that
usually takes on a calm machine. A spec with ``phases`` runs them one after the other in
the same processes (one interpreter start for the lot).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.health.redis_kit import RedisServer

from mailer.testing import wait_until

WORKER = Path(__file__).with_name("worker.py")
THRESHOLD = 3


class Workers:
    """N worker processes sharing one spec; started together by a go file per phase.

    ``phases`` (partial specs merged over ``spec``) run one after the other in the same
    processes; phase ``k`` has its own go file, stop file and outputs."""

    def __init__(
        self, tmp: Path, n: int, spec: dict[str, Any], phases: list[dict[str, Any]] | None = None
    ) -> None:
        self.tmp = tmp
        self.phases = len(phases or [{}])
        self.go = [tmp / f"go{k}" for k in range(self.phases)]
        self.outs = [[tmp / f"out{i}.{k}.json" for i in range(n)] for k in range(self.phases)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            each = [
                {**phase, "go": str(self.go[k]), "out": str(self.outs[k][i])}
                for k, phase in enumerate(phases or [{}])
            ]
            path = tmp / f"spec{i}.json"
            path.write_text(json.dumps({**spec, "phases": each}))
            # stderr to a file: an unread pipe that fills up blocks the worker
            with open(tmp / f"worker{i}.stderr", "wb") as stderr:
                self.procs.append(subprocess.Popen([sys.executable, str(WORKER), str(path)],
                                                   stderr=stderr))  # fmt: skip

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def ready(self, phase: int = 0) -> None:
        """Wait until every worker has built its Mailer for ``phase`` and reached Redis."""
        ready = [Path(f"{out}.ready") for out in self.outs[phase]]
        assert wait_until(lambda: all(p.exists() for p in ready), 60), self._why("not ready")

    def start(self, phase: int = 0) -> float:
        """Go, once every worker is ready; when (wall clock)."""
        self.ready(phase)
        self.go[phase].write_text("go")
        return time.time()

    def stop(self, phase: int = 0) -> None:
        Path(f"{self.go[phase]}.stop").write_text("stop")

    def logged(self, text: str, phase: int = 0) -> list[list[float]]:
        """Per process, when it has logged a line containing ``text`` so far."""
        found = []
        for out in self.outs[phase]:
            live = Path(f"{out}.log")
            lines = live.read_text().splitlines() if live.exists() else []
            # the last line may be half written: only whole ones count
            found.append([at for at, _, line in _whole(lines) if text in line])
        return found

    def wait_logged(self, text: str, timeout: float, phase: int = 0) -> list[float]:
        """Wait until every process has logged ``text``; each one's first time."""
        assert wait_until(lambda: all(self.logged(text, phase)), timeout), self._why(
            f"not every process logged {text!r} within {timeout} s: {self.logged(text, phase)}"
        )
        return [times[0] for times in self.logged(text, phase)]

    def results(self, phase: int | None = None, timeout: float = 150) -> list[dict[str, Any]]:
        """Each process's output for ``phase`` (the last by default: then the processes
        have exited, and each must have exited cleanly)."""
        last = self.phases - 1
        phase = last if phase is None else phase
        outs = self.outs[phase]
        if phase < last:
            done = wait_until(lambda: all(o.exists() for o in outs), timeout, interval=0.05)
            assert done, self._why(f"phase {phase} not finished in {timeout} s")
            return [json.loads(o.read_text()) for o in outs]
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            err = (self.tmp / f"worker{i}.stderr").read_text(errors="replace")
            assert proc.returncode == 0, err[-3000:]
        return [json.loads(o.read_text()) for o in outs]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)

    def _why(self, what: str) -> str:
        errors = [
            (self.tmp / f"worker{i}.stderr").read_text(errors="replace")[-1500:]
            for i in range(len(self.procs))
        ]
        return "\n".join([what, *(e for e in errors if e)])


def _whole(lines: list[str]) -> Iterator[tuple[float, int, str]]:
    for line in lines:
        try:
            at, level, text = json.loads(line)
        except ValueError:
            continue
        yield float(at), int(level), str(text)


@contextmanager
def workers(
    tmp: Path, n: int, spec: dict[str, Any], phases: list[dict[str, Any]] | None = None
) -> Iterator[Workers]:
    w = Workers(tmp, n, spec, phases)
    try:
        yield w
    finally:
        for phase in range(w.phases):
            w.stop(phase)
        w.kill()


def smtp(server: Any, name: str, **extra: Any) -> dict[str, Any]:
    config = {"host": "127.0.0.1", "port": server.port, "name": "client.test",
              "connection_timeout": 2, "greeting_timeout": 2, "socket_timeout": 3,
              **extra}  # fmt: skip
    return {"type": "smtp", "name": name, "config": config}


def health(redis: RedisServer, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"store": redis.url, "prefix": prefix, "failure_threshold": THRESHOLD,
            "refresh": 0.1, **extra}  # fmt: skip


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [s["error"] for r in results for s in r["sends"] if "error" in s]


def primary_attempts(results: list[dict[str, Any]]) -> list[list[Any]]:
    return [a for r in results for s in r["sends"] for a in s["attempts"] if a[0] == "primary"]


def logged(result: dict[str, Any], text: str) -> list[float]:
    return [at for at, _, line in result["log"] if text in line]
