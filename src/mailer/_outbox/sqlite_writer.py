"""The SQLite outbox's writer thread: operations committed in groups, off the event loop.

One writer thread per store owns the connection and commits in groups: every operation
waiting when a transaction starts goes into it (each in its own savepoint when it runs
several statements, so one failing operation does not undo the others), and all of them
are answered after the one COMMIT, with one wake-up of the caller's event loop.
Under load that turns N fsyncs into one, which is what lets the outbox keep up with
sending; alone, an operation costs one transaction as usual.

Durability (``?synchronous=`` in the URL; docs/outbox.md has the table). Every commit
survives a killed process in every mode: in WAL mode SQLite has written the WAL before
COMMIT returns. What differs is a power cut or an OS crash, which loses what was
committed since the WAL was last fsync'd:

* ``auto`` (the default): a group that holds an enqueue, a commit-point record (its own
  write, or a claim that records it: ``commit_record``) or an operator's change (retry,
  purge) is fsync'd before any of it is answered; a group of only other claims, results
  and heartbeats is not (it reaches the disk with the next fsync).
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

The store (:mod:`.sqlite`) says of each operation whether it must be durable; the
writer decides the fsyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["WriterClient"]

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]
_BATCH = 256
#: at most this often (seconds) the WAL is copied back into the database
_CHECKPOINT_EVERY = 0.25
#: past this many pages in the WAL (about 40 MB) a checkpoint waits for the writer
_WAL_LIMIT_PAGES = 10_000


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


class WriterClient:
    """Mixed into :class:`~.sqlite.SQLiteStore`: its operations reach the writer thread,
    a loop iteration's worth at a time, and are answered after their group's COMMIT."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: _Writer | None = None
        self._lock = threading.Lock()
        #: operations made during the current iteration of each event loop, handed to
        #: the writer together at its end (see _do)
        self._handover: dict[asyncio.AbstractEventLoop, list[_Job]] = {}

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

    async def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():
            self._hand_over(asyncio.get_running_loop(), writer)  # before the stop
            writer.ops.put(None)
            await _joined(writer, 30.0)


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
