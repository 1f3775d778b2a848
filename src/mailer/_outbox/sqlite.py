"""The embedded outbox: one SQLite file (WAL), shared by the processes of one machine.

One writer thread per store owns the connection and commits in groups: every operation
waiting when a transaction starts goes into it (each in its own savepoint when it runs
several statements, so one failing operation does not undo the others), and all of them
are answered after the one COMMIT, with one wake-up of the caller's event loop.
Under load that turns N fsyncs into one, which is what lets the outbox keep up with
sending; alone, an operation costs one transaction as usual.

A message's content lives in ``outbox_body``, apart from its row in ``outbox``: SQLite
rewrites a whole record (overflow pages too) on every UPDATE, and the claim, the commit
point and the result each update the row.

Claims run in ``BEGIN IMMEDIATE`` transactions: SQLite's write lock is taken at the start,
so two processes cannot both select the same due message and lease it. Other processes
wait for the lock up to ``busy_timeout`` (30 s).

Durability (``?synchronous=`` in the URL; docs/outbox.md has the table). Every commit
survives a killed process in every mode: in WAL mode SQLite has written the WAL before
COMMIT returns. What differs is a power cut or an OS crash, which loses what was
committed since the WAL was last fsync'd:

* ``auto`` (the default): a group that holds an enqueue, a commit-point record or an
  operator's change (retry, purge) is fsync'd before any of it is answered; a group of
  only claims, results and heartbeats is not (it reaches the disk with the next fsync).
  The WAL is one ordered log, so an fsync covers every commit before it: a commit-point
  record on disk implies its claim is. A power cut can lose only the latest claims (the
  attempt is undone; nothing was sent, its commit point was not recorded) and results
  (the row goes to ``unknown``, or back to ``queued`` if it had not committed): as after
  a killed worker, never a message sent twice.
* ``full`` / ``extra``: every group is fsync'd (results too: fewer ``unknown`` after a
  power cut, for an fsync more per result).
* ``normal``: none is. A power cut can lose the last enqueued messages and commit-point
  records (a message sent again after it may be a duplicate).

Besides the per-group fsyncs, a background checkpoint copies the WAL into the database
(it fsyncs the WAL first) every ``_CHECKPOINT_EVERY`` seconds while there are commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import _chunked
from .sqlite_dispatch import DISPATCH_SCHEMA, SQLiteDispatch
from .store import (
    LEASE_EXPIRED_SAFE,
    LEASE_EXPIRED_UNKNOWN,
    MAX_AGE_PASSED,
    STATES,
    Claimed,
    NewMessage,
    OutboxItem,
    Outcome,
    State,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]
_BATCH = 256
#: at most this often (seconds) the WAL is copied back into the database
_CHECKPOINT_EVERY = 0.25
#: seconds between two settlings of expired leases by one store (see claim)
_SETTLE_EVERY = 0.1
#: past this many pages in the WAL (about 40 MB) a checkpoint waits for the writer
_WAL_LIMIT_PAGES = 10_000

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
    raw         BLOB
);
"""


@dataclass(slots=True)
class _Job:
    """One operation for the writer, and where its answer goes."""

    fn: _Op
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    #: must be on disk (fsync) before it is answered, under synchronous=auto
    durable: bool
    #: a single statement (atomic by itself): no savepoint needed around it
    atomic: bool


class _Writer(threading.Thread):
    """Owns the connection; runs queued operations in group-committed transactions."""

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(name=f"mailer-outbox-sqlite:{path.name}", daemon=True)
        self.path = path
        self.synchronous = synchronous.lower()
        #: operations, handed over a loop iteration's worth at a time (None: stop)
        self.ops: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self._level = ""
        self._checkpointer: _Checkpointer | None = None

    def run(self) -> None:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # checkpoints run in their own thread (_Checkpointer)
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_PAGES * 4096}")
            self._set_level(conn, "full" if self.synchronous == "auto" else self.synchronous)
        except BaseException as exc:
            self.startup_error = exc
            self.ready.set()
            return
        self._checkpointer = _Checkpointer(self.path, self.synchronous)
        self._checkpointer.start()
        self.ready.set()
        try:
            stop = False
            while not stop:
                first = self.ops.get()
                if first is None:
                    break
                batch = first
                while len(batch) < _BATCH:
                    try:
                        nxt = self.ops.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch += nxt
                self._run(conn, batch)
        finally:
            self._checkpointer.stop()
            conn.close()

    def _set_level(self, conn: sqlite3.Connection, level: str) -> None:
        if level != self._level:
            conn.execute(f"PRAGMA synchronous={level.upper()}")
            self._level = level

    def _run(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        if self.synchronous == "auto":
            # One fsync for the whole group when any of it must survive a power cut;
            # none for worker records alone (a killed process loses nothing either way:
            # the WAL is written before COMMIT returns).
            self._set_level(conn, "full" if any(j.durable for j in batch) else "normal")
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if job.atomic:
                    try:
                        results.append((True, job.fn(conn)))
                    except Exception as exc:
                        results.append((False, exc))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, job.fn(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            results = [(False, exc)] * len(batch)
        # One wake-up per event loop for the whole group, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for job, (ok, value) in zip(batch, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, answers in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody is waiting
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, answers)
        if self._checkpointer is not None:
            self._checkpointer.poke()


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database from its own connection, off the commit path.

    SQLite's automatic checkpoint runs inside whichever COMMIT crosses the WAL's size
    limit, and that commit waits for the copy and its fsyncs: it was the tail of
    ``enqueue``'s latency. Here PASSIVE checkpoints (which never block the writer) run at
    most every ``_CHECKPOINT_EVERY`` seconds while there are commits. The WAL starts over
    from its beginning at the first write after a checkpoint that copied all of it; if
    commits keep arriving so fast that it never does and the WAL passes
    ``_WAL_LIMIT_PAGES``, one TRUNCATE checkpoint waits for a gap (a brief stall for the
    writer, as the automatic checkpoint was on every one of them).
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(name=f"mailer-outbox-checkpoint:{path.name}", daemon=True)
        self.path = path
        self.synchronous = "full" if synchronous == "auto" else synchronous
        self._wake = threading.Event()
        self._stopping = False

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join(30.0)

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        except sqlite3.Error:
            return  # the writer's own connection reports problems with the file
        try:
            mode = "PASSIVE"
            while not self._stopping:
                self._wake.wait()
                self._wake.clear()
                with contextlib.suppress(sqlite3.Error):
                    # (busy, frames in the WAL, frames copied)
                    _, log, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    mode = "TRUNCATE" if log > _WAL_LIMIT_PAGES else "PASSIVE"
                time.sleep(_CHECKPOINT_EVERY)
        finally:
            conn.close()


def _settle(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answers:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SQLiteStore(SQLiteDispatch):
    """An :class:`~mailer._outbox.store.OutboxStore` in one SQLite file (asyncio only)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "auto") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: _Writer | None = None
        self._lock = threading.Lock()
        #: operations made during the current iteration of each event loop, handed to
        #: the writer together at its end (see _do)
        self._handover: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        #: when expired leases were last settled (time.monotonic(), the writer's thread)
        self._settled = -math.inf

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    @staticmethod
    def _settle_expired(conn: sqlite3.Connection, now: float) -> None:
        _settle_expired(conn, now)

    # -- plumbing ----------------------------------------------------------------------

    def _start(self) -> _Writer:
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                writer = _Writer(self.path, self.synchronous)
                writer.start()
                writer.ready.wait()
                if writer.startup_error is not None:
                    raise writer.startup_error
                self._writer = writer
            return self._writer

    async def _do(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = False,
        atomic: bool = False,
    ) -> T:
        """Run ``op`` in the writer's next group commit.

        ``durable``: on disk before it returns, under ``synchronous=auto``; ``atomic``:
        ``op`` runs one statement, which needs no savepoint of its own.
        """
        writer = self._writer or self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # The operations of one loop iteration (the results and records of the sends
        # that a batch of replies completed, a claim) reach the writer as one hand-over:
        # one wake-up of its thread and one group for them, instead of a wake-up (and
        # often a group, a COMMIT) each. It waits for the end of this iteration only.
        jobs = self._handover.get(loop)
        if jobs is None:
            jobs = self._handover[loop] = []
            loop.call_soon(self._hand_over, loop, writer)
        jobs.append(_Job(op, future, loop, durable, atomic))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop, writer: _Writer) -> None:
        jobs = self._handover.pop(loop, None)
        if jobs:
            writer.ops.put(jobs)

    async def open(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            # one statement at a time: executescript would COMMIT the surrounding savepoint
            for statement in (*_SCHEMA.split(";"), DISPATCH_SCHEMA, _chunked.SQLITE_SCHEMA):
                if statement.strip():
                    conn.execute(statement)

        await self._do(create, durable=True)

    async def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():
            self._hand_over(asyncio.get_running_loop(), writer)  # before the stop
            writer.ops.put(None)
            await _joined(writer, 30.0)

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
                "INSERT INTO outbox_body (id, message, raw) VALUES (?, ?, ?)",
                (cur.lastrowid, item.message_json, item.raw),
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

    async def claim(self, owner: str, limit: int, *, lease: float, max_age: float) -> list[Claimed]:
        def op(conn: sqlite3.Connection) -> list[Claimed]:
            now = time.time()
            # Expired leases need settling promptly, not on every claim: at most every
            # _SETTLE_EVERY (two statements fewer on most claims under load).
            tick = time.monotonic()
            if tick - self._settled >= _SETTLE_EVERY:
                self._settled = tick
                _settle_expired(conn, now)
            claimed: list[Claimed] = []
            # Bounded: every pass moves each row it reads out of "queued" (or stops).
            while len(claimed) < limit:
                rows = conn.execute(
                    "SELECT id, created FROM outbox WHERE state = 'queued' AND next_at <= ?"
                    " ORDER BY next_at, id LIMIT ?",
                    (now, limit - len(claimed)),
                ).fetchall()
                if not rows:
                    break
                # Too old to try: checked as they come due rather than by scanning every
                # queued row per claim (which made a backlog quadratic).
                oldest = now - max_age
                old = [(MAX_AGE_PASSED, now, row) for row, created in rows if created < oldest]
                if old:
                    conn.executemany(
                        "UPDATE outbox SET state = 'dead', last_error = ?, updated = ?"
                        " WHERE id = ?",
                        old,
                    )
                due = [row for row, created in rows if created >= oldest]
                if due:
                    claimed += _lease(conn, due, owner, now + lease, now)
            return claimed

        return await self._do(op)

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
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "UPDATE outbox SET state = ?, next_at = COALESCE(?, next_at),"
                " provider = COALESCE(?, provider), last_error = ?, updated = ?,"
                " lease_owner = NULL, lease_until = NULL, pin = ?"
                " WHERE id = ? AND claim = ? AND state IN ('sending', 'unknown')",
                (
                    outcome.state,
                    outcome.next_at,
                    outcome.provider,
                    outcome.error,
                    now,
                    outcome.pin,
                    row,
                    claim,
                ),
            )
            return cur.rowcount == 1

        return await self._do(op, atomic=True)

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

    async def content(self, message_id: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT b.message FROM outbox o JOIN outbox_body b ON b.id = o.id"
                " WHERE o.message_id = ?",
                (message_id,),
            ).fetchone()
            return bytes(row[0]) if row is not None else None

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


def _lease(
    conn: sqlite3.Connection, rows: list[int], owner: str, until: float, now: float
) -> list[Claimed]:
    """Lease ``rows`` (due, in the order given) to ``owner``: two statements for all of
    them. Each row's claim is one token for the call and the row's id, as on Postgres."""
    marks = ",".join("?" * len(rows))
    params = (owner, until, secrets.token_hex(8), now, *rows)
    got = {r[0]: r for r in conn.execute(_LEASE.format(marks), params).fetchall()}
    bodies = {r[0]: r for r in conn.execute(_BODIES.format(marks), rows).fetchall()}
    return [
        Claimed(row, g[1], g[2], bodies[row][1], bodies[row][2], g[3], g[4], g[5])
        for row in rows
        if (g := got.get(row)) is not None
    ]


#: leasing due rows, ``{}`` their ids' placeholders (RETURNING's order is not theirs)
_LEASE = (
    "UPDATE outbox SET state = 'sending', lease_owner = ?, lease_until = ?,"
    " claim = ? || ':' || id, committed = 0, attempts = attempts + 1, updated = ?"
    " WHERE id IN ({}) RETURNING id, claim, message_id, attempts, created, pin"
)
_BODIES = "SELECT id, message, raw FROM outbox_body WHERE id IN ({})"


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


async def _joined(thread: threading.Thread, timeout: float) -> None:
    """Wait for ``thread`` to end, for at most ``timeout`` seconds, without an executor.

    ``asyncio.to_thread`` needs the loop's default executor, which may already be shut
    down when a process closes its shared mailers at exit (Celery's threads pool logged
    "cannot schedule new futures after shutdown", and the pooled SMTP connections were
    dropped without QUIT); and Python 3.12 refuses new threads at interpreter shutdown.
    The writer ends within a statement once it sees the stop, so a short poll is cheap.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while thread.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
