"""The SQLite store's side of task-queue dispatch (docs/task-queues.md).

Kept apart from :mod:`.sqlite`: a task engine carries "deliver row N", and these
operations are what a task and the sweep need from the store. Which rows were handed to
an engine, and when, lives in its own table (``outbox_dispatch``), so the outbox's own
rows and their writes are unchanged.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from .store import MAX_AGE_PASSED, Claimed

__all__ = ["DISPATCH_SCHEMA", "SQLiteDispatch"]

T = TypeVar("T")

DISPATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_dispatch (
    id          INTEGER PRIMARY KEY,
    engine      TEXT    NOT NULL,
    published   REAL    NOT NULL,
    publishes   INTEGER NOT NULL DEFAULT 1
)
"""

#: a task may arrive this much before its row's next_at (the engine's clock, rounding)
DUE_SLACK = 2.0


def _note(conn: sqlite3.Connection, row: int, engine: str, now: float) -> None:
    conn.execute(
        "INSERT INTO outbox_dispatch (id, engine, published) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET engine = excluded.engine,"
        " published = excluded.published, publishes = publishes + 1",
        (row, engine, now),
    )


class SQLiteDispatch:
    """Mixed into :class:`~.sqlite.SQLiteStore`: the operations of dispatch."""

    async def _do(
        self, op: Callable[[sqlite3.Connection], T], *, durable: bool = False, atomic: bool = False
    ) -> T:
        raise NotImplementedError  # SQLiteStore's

    @staticmethod
    def _settle_expired(conn: sqlite3.Connection, now: float) -> None:
        raise NotImplementedError  # SQLiteStore's: expired leases, by the commit flag

    async def dispatched(self, message_id: str, engine: str) -> int | None:
        """Record that ``message_id``'s task is being published; its row id (None when
        it is no longer queued: nothing to publish)."""

        def op(conn: sqlite3.Connection) -> int | None:
            got = conn.execute(
                "SELECT id FROM outbox WHERE message_id = ? AND state = 'queued'", (message_id,)
            ).fetchone()
            if got is None:
                return None
            _note(conn, got[0], engine, time.time())
            return int(got[0])

        return await self._do(op)

    async def redispatched(self, row: int, engine: str) -> None:
        """Record that row ``row``'s task is published again (a retry, the sweep)."""
        await self._do(lambda conn: _note(conn, row, engine, time.time()))

    async def claim_row(
        self, row: int, owner: str, *, lease: float, max_age: float
    ) -> Claimed | str:
        """Lease row ``row`` to ``owner`` if it is queued and due; else why not (its
        state, ``"not due"`` or ``"missing"``): the check that makes a task run twice
        send once."""

        settle = self._settle_expired

        def op(conn: sqlite3.Connection) -> Claimed | str:
            now = time.time()
            settle(conn, now)
            got = conn.execute(
                "SELECT state, next_at, created FROM outbox WHERE id = ?", (row,)
            ).fetchone()
            if got is None:
                return "missing"
            state, next_at, created = got
            if state != "queued":
                return str(state)
            if next_at > now + DUE_SLACK:
                return "not due"
            if created < now - max_age:
                conn.execute(
                    "UPDATE outbox SET state = 'dead', last_error = ?, updated = ? WHERE id = ?",
                    (MAX_AGE_PASSED, now, row),
                )
                return "dead"
            token = secrets.token_hex(8)
            claimed = conn.execute(
                "UPDATE outbox SET state = 'sending', lease_owner = ?, lease_until = ?,"
                " claim = ?, committed = 0, attempts = attempts + 1, updated = ?"
                " WHERE id = ? AND state = 'queued' RETURNING message_id, attempts, created, pin",
                (owner, now + lease, token, now, row),
            ).fetchone()
            body = conn.execute("SELECT message, raw, digest FROM outbox_body WHERE id = ?", (row,))
            message, raw, digest = body.fetchone()
            mid, attempts, created, pin = claimed
            return Claimed(row, token, mid, message, raw, attempts, created, pin, digest=digest)

        return await self._do(op)

    async def overdue(self, engine: str, *, grace: float, limit: int = 1000) -> list[int]:
        """Rows whose task was lost: queued, due for ``grace`` seconds and not published
        in that time (expired leases settled first). Recorded as published again."""

        settle = self._settle_expired

        def op(conn: sqlite3.Connection) -> list[int]:
            now = time.time()
            settle(conn, now)
            rows = conn.execute(
                "SELECT o.id FROM outbox o LEFT JOIN outbox_dispatch d ON d.id = o.id"
                " WHERE o.state = 'queued' AND o.next_at <= ?"
                " AND (d.published IS NULL OR d.published <= ?) ORDER BY o.next_at LIMIT ?",
                (now - grace, now - grace, limit),
            ).fetchall()
            for (row,) in rows:
                _note(conn, row, engine, now)
            return [int(r[0]) for r in rows]

        return await self._do(op)

    async def dispatch_stats(self) -> dict[str, dict[str, int]]:
        """Per engine: rows handed to it, tasks published, and those rows by state."""

        def op(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for engine, state, rows, publishes in conn.execute(
                "SELECT d.engine, o.state, COUNT(*), SUM(d.publishes) FROM outbox_dispatch d"
                " JOIN outbox o ON o.id = d.id GROUP BY d.engine, o.state"
            ):
                counts = out.setdefault(engine, {"rows": 0, "published": 0})
                counts["rows"] += int(rows)
                counts["published"] += int(publishes)
                counts[state] = int(rows)
            return out

        return await self._do(op, atomic=True)
