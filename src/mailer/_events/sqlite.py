"""Events and the suppression list in a SQLite file (WAL), shared by one machine's processes.

The file is the outbox's when there is one (its tables are ``outbox*``; these are
``mailer_*``), opened on a connection of our own: WAL lets it write beside the outbox's
writer thread, each waiting for the other's lock up to ``busy_timeout`` (30 s).

Every call is one transaction on a worker thread (``anyio.to_thread``), committed before
it returns; one lock per backend keeps the connection to one thread at a time.

The suppression list keeps a change log (``mailer_suppression_log``, an AUTOINCREMENT
sequence): SQLite's single writer gives the sequence in commit order, so a reader that
asks for the rows after the last one it saw never misses one. Log rows older than the
event retention are trimmed; a copy that was idle past that loads a fresh snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

from .model import DeliveryEvent
from .store import (
    Changes,
    EntryFor,
    SendRecord,
    SuppressionEntry,
    entries_for,
    event_from_row,
    event_row,
)

__all__ = ["SQLiteBackend", "sqlite_path"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailer_events (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider            TEXT NOT NULL,
    event_key           TEXT NOT NULL,
    type                TEXT NOT NULL,
    message_id          TEXT,
    provider_message_id TEXT,
    recipient           TEXT NOT NULL,
    timestamp           REAL NOT NULL,
    bounce              TEXT,
    reason              TEXT,
    raw                 TEXT,
    stored              REAL NOT NULL,
    UNIQUE (provider, event_key)
);
CREATE INDEX IF NOT EXISTS mailer_events_message ON mailer_events (message_id);
CREATE INDEX IF NOT EXISTS mailer_events_stored ON mailer_events (stored);
CREATE TABLE IF NOT EXISTS mailer_sends (
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    created             REAL NOT NULL,
    PRIMARY KEY (provider, provider_message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailer_suppression (
    address     TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    provider    TEXT,
    message_id  TEXT,
    created     REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailer_suppression_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    address     TEXT NOT NULL,
    reason      TEXT,
    at          REAL NOT NULL
);
"""

_EVENT_COLUMNS = (
    "provider, event_key, type, message_id, provider_message_id, recipient, timestamp,"
    " bounce, reason, raw"
)
#: change-log rows kept at least this long (seconds), whatever the event retention
_LOG_KEEP = 86400.0


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///rel.db`` or ``sqlite:////abs.db`` URL."""
    path = urlsplit(url).path
    return Path(path[1:] if path.startswith("/") else path)


class SQLiteBackend:
    """Events and suppression entries in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteBackend {str(self.path)!r}>"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise RuntimeError("the SQLite events store is not open")
                with conn:  # one transaction: committed, or rolled back on error
                    return fn(conn)

        return await anyio.to_thread.run_sync(call)

    async def open(self) -> None:
        if self._conn is not None:
            return

        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.isolation_level = "IMMEDIATE"  # `with conn` opens BEGIN IMMEDIATE
            with conn:
                conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            return conn

        conn = await anyio.to_thread.run_sync(connect)
        with self._lock:
            if self._conn is None:
                self._conn = conn
                return
        conn.close()

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- events --------------------------------------------------------------------------

    async def add_events(self, events: Sequence[DeliveryEvent]) -> list[bool]:
        rows = [event_row(e) for e in events]

        return await self._run(lambda conn: _insert_events(conn, rows))

    async def add_events_and_entries(
        self, events: Sequence[DeliveryEvent], entry_for: EntryFor
    ) -> tuple[list[bool], list[SuppressionEntry], list[str]]:
        rows = [event_row(e) for e in events]

        def op(conn: sqlite3.Connection) -> tuple[list[bool], list[SuppressionEntry], list[str]]:
            fresh = _insert_events(conn, rows)
            entries = entries_for(events, fresh, entry_for)
            return fresh, entries, _insert_entries(conn, entries)

        return await self._run(op)

    async def record_sends(self, records: Sequence[SendRecord]) -> None:
        rows = [(r.provider, r.provider_message_id, r.message_id, r.created) for r in records]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO mailer_sends VALUES (?, ?, ?, ?)", rows)

        await self._run(op)

    async def lookup(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, str]:
        ids = list(provider_message_ids)

        def op(conn: sqlite3.Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for pmid, mid in conn.execute(
                    "SELECT provider_message_id, message_id FROM mailer_sends"  # noqa: S608 - constant columns
                    f" WHERE provider = ? AND provider_message_id IN ({marks})",
                    (provider, *chunk),
                ):
                    out[pmid] = mid
            return out

        return await self._run(op)

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        def op(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM mailer_events WHERE message_id = ?"  # noqa: S608 - constant columns
                " ORDER BY timestamp, id LIMIT ?",
                (message_id, limit),
            ).fetchall()

        return [event_from_row(r) for r in await self._run(op)]

    async def purge_events(self, older_than: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cut = time.time() - older_than
            n = conn.execute("DELETE FROM mailer_events WHERE stored < ?", (cut,)).rowcount
            conn.execute("DELETE FROM mailer_sends WHERE created < ?", (cut,))
            log_cut = time.time() - max(older_than, _LOG_KEEP)
            conn.execute("DELETE FROM mailer_suppression_log WHERE at < ?", (log_cut,))
            return int(n)

        return await self._run(op)

    # -- suppression ---------------------------------------------------------------------

    async def add(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        return await self._run(lambda conn: _insert_entries(conn, entries))

    async def remove(self, address: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM mailer_suppression WHERE address = ?", (address,))
            if cur.rowcount != 1:
                return False
            conn.execute(
                "INSERT INTO mailer_suppression_log (address, reason, at) VALUES (?, NULL, ?)",
                (address, time.time()),
            )
            return True

        return await self._run(op)

    async def get(self, address: str) -> SuppressionEntry | None:
        def op(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "SELECT address, reason, created, provider, message_id FROM mailer_suppression"
                " WHERE address = ?",
                (address,),
            ).fetchone()

        row = await self._run(op)
        return None if row is None else SuppressionEntry(*row)

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        def op(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT address, reason, created, provider, message_id FROM mailer_suppression"
                " ORDER BY created, address LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()

        return [SuppressionEntry(*r) for r in await self._run(op)]

    async def snapshot(self) -> tuple[dict[str, str], Any]:
        def op(conn: sqlite3.Connection) -> tuple[dict[str, str], Any]:
            (seq,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM mailer_suppression_log"
            ).fetchone()
            rows = conn.execute("SELECT address, reason FROM mailer_suppression").fetchall()
            return dict(rows), seq

        return await self._run(op)

    async def changes(self, cursor: Any) -> Changes | None:
        def op(conn: sqlite3.Connection) -> Changes | None:
            (low,) = conn.execute(
                "SELECT coalesce(min(seq), 0) FROM mailer_suppression_log"
            ).fetchone()
            if low > cursor + 1:
                return None  # trimmed past the cursor: rows may be missing
            rows = conn.execute(
                "SELECT seq, address, reason FROM mailer_suppression_log WHERE seq > ?"
                " ORDER BY seq",
                (cursor,),
            ).fetchall()
            return _fold(rows, cursor)

        return await self._run(op)


def _insert_events(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[bool]:
    """Insert event rows; for each, whether it was new."""
    now = time.time()
    sql = (
        f"INSERT OR IGNORE INTO mailer_events ({_EVENT_COLUMNS}, stored)"  # noqa: S608 - constant
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    return [conn.execute(sql, (*row, now)).rowcount == 1 for row in rows]


def _insert_entries(conn: sqlite3.Connection, entries: Sequence[SuppressionEntry]) -> list[str]:
    """Insert suppression entries (and their log rows); the addresses that were new."""
    added = []
    now = time.time()
    for e in entries:
        cur = conn.execute(
            "INSERT OR IGNORE INTO mailer_suppression VALUES (?, ?, ?, ?, ?)",
            (e.address, e.reason, e.provider, e.message_id, e.created),
        )
        if cur.rowcount == 1:
            added.append(e.address)
            conn.execute(
                "INSERT INTO mailer_suppression_log (address, reason, at) VALUES (?, ?, ?)",
                (e.address, e.reason, now),
            )
    return added


def _fold(rows: Sequence[Sequence[Any]], cursor: Any) -> Changes:
    """Log rows in order -> the net change (the last word on each address wins)."""
    last: dict[str, str | None] = {}
    for _, address, reason in rows:
        last[address] = reason
    added = {a: r for a, r in last.items() if r is not None}
    removed = frozenset(a for a, r in last.items() if r is None)
    return Changes(added, removed, rows[-1][0] if rows else cursor)
