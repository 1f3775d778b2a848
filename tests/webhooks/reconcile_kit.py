"""What the ``outbox reconcile`` tests share (test_reconcile*.py): an outbox on SQLite in
the test's directory with test-sized times, a send whose reply the fake API loses (the
row ends ``unknown``), the rows' states, rows made older, and the CLI run as a process.

Each ESP's fake lookup API stays in its own test module; these are the steps around it."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio

from mailer import Mailer, Message
from mailer.testing import HTTPTestServer

__all__ = ["age_rows", "cli_reconcile", "config", "message", "send_lost", "states"]


def config(tmp_path: Path, provider: dict[str, Any], **outbox: Any) -> dict[str, Any]:
    """One provider (a config entry), no retry, and an outbox in ``tmp_path/outbox.db``
    polled every 50 ms; ``outbox`` overrides its settings (``max_attempts=1``)."""
    return {
        "providers": [provider],
        "retry": {"attempts": 1},
        "outbox": {"url": f"sqlite:///{tmp_path / 'outbox.db'}", "lease": 5.0,
                   "poll_interval": 0.05,
                   "backoff": {"initial": 0.05, "max": 0.05, "jitter": 0.0}, **outbox},
    }  # fmt: skip


def message(to: str, text: str = "t", subject: str = "s") -> Message:
    return Message(sender="a@example.com", to=[to], subject=subject, text=text)


async def send_lost(mailer: Mailer, api: HTTPTestServer, msg: Message, mode: str) -> str:
    """Enqueue ``msg`` and drain it with the server in ``mode`` (``accept-drop``: taken,
    reply lost; ``drop``: never taken): the row ends ``unknown``."""
    api.mode = mode
    message_id = await mailer.enqueue(msg)
    await mailer.drain(timeout=10.0)
    api.mode = "ok"
    return message_id


async def states(tmp_path: Path, provider: dict[str, Any]) -> dict[str, str]:
    """Each row's state by Message-ID, read through a Mailer of the same config."""
    async with Mailer.from_config(config(tmp_path, provider)) as mailer:
        return {i.message_id: i.state for i in await mailer.outbox.items(limit=100)}


def age_rows(tmp_path: Path, seconds: float, created: float = 0.0) -> None:
    """Make the ``unknown`` rows' last attempt ``seconds`` older, and their creation
    ``created`` seconds older."""
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        db.execute("UPDATE outbox SET updated = updated - ?, created = created - ?"
                   " WHERE state = 'unknown'", (seconds, created))  # fmt: skip


async def cli_reconcile(tmp_path: Path, provider: dict[str, Any]) -> bytes:
    """``mailer outbox reconcile`` in a process of its own, awaited (the fake API runs
    on this test's event loop); its output."""
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(config(tmp_path, provider)))
    with anyio.fail_after(60):
        command = [sys.executable, "-m", "mailer", "outbox", "reconcile", "--config", str(path)]
        done = await anyio.run_process(command, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout
