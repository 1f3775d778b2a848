"""The embedded outbox: one SQLite file (WAL), shared by the processes of one machine.

A message's content lives in ``outbox_body``, apart from its row in ``outbox``: SQLite
rewrites a whole record (overflow pages too) on every UPDATE, and the claim, the commit
point and the result each update the row.

Claims run in ``BEGIN IMMEDIATE`` transactions: SQLite's write lock is taken at the start,
so two processes cannot both select the same due message and lease it. Other processes
wait for the lock up to ``busy_timeout`` (30 s).

Operations run on one writer thread, committed in groups (:mod:`.sqlite_writer`, which
also describes durability: ``?synchronous=`` in the URL).
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
import weakref
from collections.abc import Sequence

from . import _chunked, sqlite_rows
from ._batch import Batcher
from .sqlite_dispatch import DISPATCH_SCHEMA, SQLiteDispatch
from .sqlite_writer import WriterClient
from .store import (
    LEASE_EXPIRED_SAFE,
    LEASE_EXPIRED_UNKNOWN,
    STATES,
    Claimed,
    NewMessage,
    OutboxItem,
    Outcome,
    State,
    Stored,
)

__all__ = ["SQLiteStore"]

#: seconds between two settlings of expired leases by one store (see claim)
_SETTLE_EVERY = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT    NOT NULL UNIQUE,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     REAL    NOT NULL,
    updated     REAL    NOT NULL,
    next_at     REAL    NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    claim       TEXT,
    committed   INTEGER NOT NULL DEFAULT 0,
    provider    TEXT,
    last_error  TEXT,
    pin         TEXT
);
CREATE INDEX IF NOT EXISTS outbox_state_next ON outbox (state, next_at);
CREATE INDEX IF NOT EXISTS outbox_lease ON outbox (state, lease_until);
CREATE TABLE IF NOT EXISTS outbox_body (
    id          INTEGER PRIMARY KEY,
    message     BLOB    NOT NULL,
    raw         BLOB,
    digest      BLOB
);
"""


class SQLiteStore(WriterClient, SQLiteDispatch):
    """An :class:`~mailer._outbox.store.OutboxStore` in one SQLite file (asyncio only)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "auto") -> None:
        super().__init__(path, synchronous)
        #: claims and results in a few statement steps (see .sqlite_rows); decided by
        #: open() from the file's SQLite and encoding
        self._one_step = False
        #: when expired leases were last settled (time.monotonic(), the writer's thread)
        self._settled = -math.inf
        #: results are grouped per event loop (a Batcher's task lives on one loop)
        self._finishers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, Batcher[tuple[int, str, Outcome], bool]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    @staticmethod
    def _settle_expired(conn: sqlite3.Connection, now: float) -> None:
        _settle_expired(conn, now)

    async def open(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            # one statement at a time: executescript would COMMIT the surrounding savepoint
            for statement in (*_SCHEMA.split(";"), DISPATCH_SCHEMA, _chunked.SQLITE_SCHEMA):
                if statement.strip():
                    conn.execute(statement)
            # added with the sealed load (_load.py): files made before it gain the column
            columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox_body)")}
            if "digest" not in columns:
                conn.execute("ALTER TABLE outbox_body ADD COLUMN digest BLOB")
            self._one_step = sqlite_rows.one_step_supported(conn)

        await self._do(create, durable=True)

    async def close(self) -> None:
        batcher = self._finishers.get(asyncio.get_running_loop())
        if batcher is not None:
            await batcher.aclose()  # the results already submitted, first
        await super().close()

    # -- the protocol ------------------------------------------------------------------

    async def add(self, item: NewMessage) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO outbox (message_id, state, attempts, created, updated, next_at,"
                " last_error) VALUES (?, 'queued', ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO NOTHING",
                (item.message_id, item.attempts, now, now, item.next_at, item.last_error),
            )
            if cur.rowcount != 1:
                return False
            # The content lives in its own table: SQLite rewrites a whole row (overflow
            # pages included) on every UPDATE, and the claim, the commit point and the
            # result each update the row. With the content in it that was about 60 KB
            # of WAL per message sent; without, a page or two.
            conn.execute(
                "INSERT INTO outbox_body (id, message, raw, digest) VALUES (?, ?, ?, ?)",
                (cur.lastrowid, item.message_json, item.raw, item.digest),
            )
            if item.parts:  # a large message's attachments (read here, off the loop)
                assert cur.lastrowid is not None
                _chunked.sqlite_write(conn, cur.lastrowid, item.parts)
            return True

        return await self._do(op, durable=True)

    async def read_chunk(self, row: int, part: int, seq: int) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            found = conn.execute(_chunked.SQLITE_READ, (row, part, seq)).fetchone()
            return None if found is None else bytes(found[0])

        return await self._do(op, atomic=True)

    async def claim(
        self, owner: str, limit: int, *, lease: float, max_age: float, commit: bool = False
    ) -> list[Claimed]:
        def op(conn: sqlite3.Connection) -> list[Claimed]:
            now = time.time()
            # Expired leases need settling promptly, not on every claim: at most every
            # _SETTLE_EVERY (two statements fewer on most claims under load).
            tick = time.monotonic()
            if tick - self._settled >= _SETTLE_EVERY:
                self._settled = tick
                _settle_expired(conn, now)
            return sqlite_rows.claim(
                conn,
                owner=owner,
                limit=limit,
                now=now,
                until=now + lease,
                max_age=max_age,
                commit=commit,
                one_step=self._one_step,
            )

        # A claim that records the commit point is durable (fsync'd under
        # synchronous=auto) before it returns, as that record was on its own.
        return await self._do(op, durable=commit)

    async def mark_committing(self, row: int, claim: str, provider: str | None) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE outbox SET committed = 1, provider = ?, updated = ?"
                " WHERE id = ? AND claim = ? AND state = 'sending'",
                (provider, time.time(), row, claim),
            )
            return cur.rowcount == 1

        return await self._do(op, durable=True, atomic=True)

    async def finish(self, row: int, claim: str, outcome: Outcome) -> bool:
        # Results wait while the previous group of them is being written, then go
        # together as one operation for the writer (see _finish_many).
        loop = asyncio.get_running_loop()
        batcher = self._finishers.get(loop)
        if batcher is None:
            batcher = self._finishers[loop] = Batcher(self._finish_many)
        return await batcher.submit((row, claim, outcome))

    async def _finish_many(self, items: Sequence[tuple[int, str, Outcome]]) -> list[bool]:
        """The results of concurrent attempts, as one operation for the writer thread
        (:func:`.sqlite_rows.finish`: one statement for all of them). When a claim was
        lost (fewer rows changed than given), the rows are written again one at a time
        to say which."""
        now = time.time()
        params = [
            (o.state, o.next_at, o.provider, o.error, now, o.pin, row, claim)
            for row, claim, o in items
        ]

        def op(conn: sqlite3.Connection) -> list[bool]:
            return sqlite_rows.finish(conn, params, one_step=self._one_step)

        # several rows: in the writer's savepoint, so a failing one undoes them all (the
        # Batcher then writes them one at a time)
        return await self._do(op, atomic=len(params) == 1)

    async def renew(self, owner: str, *, lease: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE outbox SET lease_until = ? WHERE state = 'sending' AND lease_owner = ?",
                (time.time() + lease, owner),
            )
            return cur.rowcount

        return await self._do(op, atomic=True)

    async def next_due(self) -> float | None:
        def op(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'queued'").fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._do(op, atomic=True)

    async def stats(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = dict.fromkeys(STATES, 0)
            for state, n in conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
                counts[state] = int(n)
            return counts

        return await self._do(op, atomic=True)

    async def items(self, state: State | None = None, limit: int = 100) -> list[OutboxItem]:
        def op(conn: sqlite3.Connection) -> list[OutboxItem]:
            columns = f"SELECT {OutboxItem.COLUMNS} FROM outbox"  # noqa: S608 - constant
            if state is None:
                query = conn.execute(columns + " ORDER BY id LIMIT ?", (limit,))
            else:
                query = conn.execute(
                    columns + " WHERE state = ? ORDER BY id LIMIT ?", (state, limit)
                )
            return [OutboxItem.from_row(r) for r in query.fetchall()]

        return await self._do(op, atomic=True)

    async def retry(self, message_ids: list[str]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            now, n = time.time(), 0
            for mid in message_ids:
                cur = conn.execute(
                    "UPDATE outbox SET state = 'queued', next_at = ?, updated = ?, pin = NULL,"
                    " committed = 0, claim = NULL, lease_owner = NULL, lease_until = NULL"
                    " WHERE message_id = ? AND state != 'sending'",
                    (now, now, mid),
                )
                n += cur.rowcount
            return n

        return await self._do(op, durable=True)

    async def settle(self, message_id: str, provider: str, note: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE outbox SET state = 'sent', provider = ?, last_error = ?, updated = ?"
                " WHERE message_id = ? AND state = 'unknown'",
                (provider, note, time.time(), message_id),
            )
            return cur.rowcount == 1

        result: bool = await self._do(op, durable=True)
        return result

    async def content(self, message_id: str) -> Stored | None:
        def op(conn: sqlite3.Connection) -> Stored | None:
            row = conn.execute(
                "SELECT o.id, b.message, b.raw FROM outbox o JOIN outbox_body b ON b.id = o.id"
                " WHERE o.message_id = ?",
                (message_id,),
            ).fetchone()
            if row is None:
                return None
            return Stored(row[0], bytes(row[1]), None if row[2] is None else bytes(row[2]))

        return await self._do(op, atomic=True)

    async def purge(self, state: State, older_than: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            args = (state, time.time() - older_than)
            for table in ("outbox_body", "outbox_chunk"):
                conn.execute(
                    f"DELETE FROM {table} WHERE id IN"  # noqa: S608 - constant names
                    " (SELECT id FROM outbox WHERE state = ? AND updated < ?)",
                    args,
                )
            return conn.execute("DELETE FROM outbox WHERE state = ? AND updated < ?", args).rowcount

        return await self._do(op, durable=True)


def _settle_expired(conn: sqlite3.Connection, now: float) -> None:
    """Leases whose worker died: decided from the row alone (the commit flag)."""
    conn.execute(
        "UPDATE outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL,"
        " claim = NULL, last_error = ?, updated = ?"
        " WHERE state = 'sending' AND lease_until < ? AND committed = 0",
        (LEASE_EXPIRED_SAFE, now, now),
    )
    # the claim stays: a worker that is only late may still report the real outcome
    conn.execute(
        "UPDATE outbox SET state = 'unknown', lease_owner = NULL, lease_until = NULL,"
        " last_error = ?, updated = ?"
        " WHERE state = 'sending' AND lease_until < ? AND committed = 1",
        (LEASE_EXPIRED_UNKNOWN, now, now),
    )
