"""Fixtures for the outbox tests: real SMTP servers on 127.0.0.1 (the fault matrix's,
with its ledger by Message-ID), and an outbox per test: a SQLite file, or a database in a
throwaway Postgres cluster."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from tests.faults.conftest import smtp  # the fault matrix's servers (ledger); certs: the session's

from mailer import Message
from mailer._outbox import OutboxStore, sqlite_rows
from mailer._outbox.store import NewMessage


@pytest.fixture(params=["sqlite", "sqlite-by-row", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The outbox URL, once per store; ``sqlite-by-row``: SQLite with the claims and
    results of an SQLite older than 3.38 (a row a statement step, see
    mailer._outbox.sqlite_rows), which the machine's own SQLite would not run."""
    if request.param.startswith("sqlite"):
        if request.param == "sqlite-by-row":
            monkeypatch = request.getfixturevalue("monkeypatch")
            monkeypatch.setattr(sqlite_rows, "one_step_supported", lambda conn: False)
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    return str(request.getfixturevalue("pg_url"))


def rows(db_url: str) -> list[dict[str, Any]]:
    """Every row of the outbox, read directly from the database."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.row_factory = sqlite3.Row
            query = "SELECT * FROM outbox LEFT JOIN outbox_body USING (id) ORDER BY id"
            return [dict(r) for r in conn.execute(query)]
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM mailer_outbox ORDER BY id"))


def execute(db_url: str, sql: str, *args: Any) -> None:
    """One statement (``?`` placeholders) on the outbox's table, called ``outbox``."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql, args)
        return
    import psycopg

    sql = sql.replace("?", "%s").replace("outbox", "mailer_outbox")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.encode(), args)


def reset(db_url: str) -> None:
    """Empty the outbox (between the parts of a test)."""
    execute(db_url, "DELETE FROM outbox")
    if db_url.startswith("sqlite"):
        execute(db_url, "DELETE FROM outbox_body")


def fast_outbox(url: str, **overrides: Any) -> dict[str, Any]:
    """An outbox config with test-sized times (retries in 50 ms, leases of 1 s)."""
    config: dict[str, Any] = {
        "url": url,
        "backoff": {"initial": 0.05, "max": 0.05, "jitter": 0.0},
        "lease": 1.0,
        "poll_interval": 0.05,
        "max_attempts": 1000,
    }
    config.update(overrides)
    return config


def smtp_entry(name: str, port: int, priority: int) -> dict[str, Any]:
    return {
        "type": "smtp",
        "name": name,
        "priority": priority,
        "config": {
            "host": "127.0.0.1", "port": port, "connection_timeout": 1.0,
            "greeting_timeout": 1.0, "socket_timeout": 3.0, "name": "client.test",
        },
    }  # fmt: skip


def make_message(i: int) -> Message:
    return Message(
        sender="app@example.com", to=[f"user{i}@example.org"], subject=f"Message {i}",
        text=f"body {i}",
    )  # fmt: skip


async def add_messages(store: OutboxStore, count: int, *, start: int = 0) -> list[str]:
    """Store ``count`` test messages straight into ``store``, due now, oldest first;
    their Message-IDs."""
    ids = []
    for i in range(start, start + count):
        m = make_message(i)
        assert m.message_id
        ids.append(m.message_id)
        await store.add(NewMessage(m.message_id, m.model_dump_json().encode(), m.as_bytes(),
                                   time.time()))  # fmt: skip
    return ids


__all__ = ["smtp"]  # a re-exported fixture
