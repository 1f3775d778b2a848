"""The task-queue tests' kit: an outbox config that dispatches to an engine, real engine
workers in their own processes (started, SIGKILLed, restarted), the SMTP server's ledger
and the outbox rows read straight from the database. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.outbox.conftest import db_url  # the fixture: both stores
from tests.outbox.conftest import rows as url_rows

from mailer import Message
from mailer.testing import SMTPTestServer, wait_until

ROOT = Path(__file__).resolve().parents[2]

#: the longer chaos runs (a broker restart on Postgres, ...): ``make soak`` sets
#: MAILER_SOAK_CHAOS; ``make test`` keeps a kill on each store and engine
SOAK = pytest.mark.skipif(
    not os.environ.get("MAILER_SOAK_CHAOS"), reason="a soak: `make soak` sets MAILER_SOAK_CHAOS"
)


def smtp_provider(port: int) -> dict[str, Any]:
    return {
        "type": "smtp", "name": "smtp",
        "config": {
            "host": "127.0.0.1", "port": port, "connection_timeout": 2.0,
            "greeting_timeout": 2.0, "socket_timeout": 5.0, "name": "client.test",
        },
    }  # fmt: skip


#: where a test's outbox is: its tmp_path (the SQLite file ``outbox.db`` there) or a URL
Where = Path | str


def outbox_url(where: Where) -> str:
    return where if isinstance(where, str) else f"sqlite:///{where / 'outbox.db'}"


def write_config(
    tmp_path: Path, port: int, dispatch: dict[str, Any] | None, url: str | None = None
) -> Path:
    """A Mailer config: one SMTP provider, an outbox with test-sized times (``url``, by
    default a SQLite file in ``tmp_path``)."""
    outbox: dict[str, Any] = {
        "url": url or outbox_url(tmp_path),
        "backoff": {"initial": 0.2, "max": 0.5, "jitter": 0.0},
        "lease": 1.0,
        "max_attempts": 1000,
    }
    if dispatch is not None:
        outbox["dispatch"] = {"sweep_after": 1.0, "sweep_every": 1.0, **dispatch}
    config = {"providers": [smtp_provider(port)], "retry": {"attempts": 1}, "outbox": outbox}
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(config))
    return path


def message(i: int) -> Message:
    return Message(
        sender="app@example.com", to=[f"user{i}@example.org"], subject=f"Message {i}",
        text=f"body {i}",
    )  # fmt: skip


def rows(where: Where) -> list[dict[str, Any]]:
    if isinstance(where, str):
        return url_rows(where)
    with sqlite3.connect(where / "outbox.db", timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")]


def states(where: Where) -> Counter[str]:
    return Counter(r["state"] for r in rows(where))


class Workers:
    """Engine worker processes, each in its own session so a kill reaches its children."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"worker{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for log in self.logs)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    made: list[Workers] = []

    def make(env: dict[str, str]) -> Workers:
        made.append(Workers(tmp_path, env))
        return made[-1]

    yield make
    for w in made:
        w.stop_all()


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    server = SMTPTestServer().start()
    try:
        yield server
    finally:
        server.stop()


def children(pid: int) -> list[int]:
    """The live direct children of ``pid`` (a Celery pool's processes), from /proc.

    A zombie is left out: a child killed earlier stays in /proc until the pool master
    reaps it, and killing it then raised ProcessLookupError (or killed nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def kill_a_child(pid: int, w: Workers, timeout: float = 30) -> int:
    """SIGKILL one live pool process of ``pid``; its pid. A child can still exit between
    the listing and the kill (the pool replacing it): then the next one, bounded."""
    deadline = time.monotonic() + timeout
    for _ in range(100):
        for child in children(pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                continue
            return child
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"no live pool process of {pid} to kill\n{w.output()}")


def wait(predicate: Callable[[], object], timeout: float, what: str, w: Workers) -> None:
    if not wait_until(predicate, timeout, interval=0.05):
        raise AssertionError(f"timed out ({timeout} s) waiting for {what}\n{w.output()}")


def settle(where: Where, sweep: Callable[[], None], timeout: float, w: Workers) -> None:
    """Run the sweep every second until no row is queued or sending (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = states(where)
        if counts["queued"] == 0 and counts["sending"] == 0:
            return
        sweep()
        time.sleep(1.0)
    raise AssertionError(f"rows left {dict(states(where))} after {timeout} s\n{w.output()}")


def check_ledger(
    where: Where, server: SMTPTestServer, kills: int, in_flight: int = 1
) -> dict[str, int]:
    """Each message exactly once, except ``unknown`` rows: at most once, no more of them
    than the kills times the messages a killed process had in flight (``dispatch.batch``:
    1 by default). Returns the states."""
    received = server.received()
    final = rows(where)
    by_state = Counter(r["state"] for r in final)
    duplicates = {mid: n for mid, n in received.items() if n > 1}
    assert not duplicates, f"sent twice: {duplicates}"
    for r in final:
        if r["state"] == "sent":
            assert received[r["message_id"]] == 1, r
        else:
            assert r["state"] == "unknown", r
    assert by_state["unknown"] <= kills * in_flight, by_state
    assert len(final) == sum(1 for r in final if r["state"] in ("sent", "unknown"))
    return dict(by_state)


__all__ = [
    "SOAK",
    "Workers",
    "check_ledger",
    "children",
    "db_url",
    "kill_a_child",
    "message",
    "outbox_url",
    "rows",
    "settle",
    "smtp_server",
    "states",
    "wait",
    "workers",
    "write_config",
]
