"""The SQLite outbox's claims and results beside a busy thread: a few statement steps
against a step a row (mailer._outbox.sqlite_rows), in the same run.

Python's ``sqlite3`` releases the GIL for every ``sqlite3_step``: a row a step. Beside a
thread that runs Python, every step is a GIL hand-over. This isolates that from the rest
of the drain: one outbox file per path (3,000 queued 2 KB messages), a "busy" thread
standing in for the event loop, and, every 2 ms, a claim of ``--rows`` rows and then
their results, each in its own transaction, as the writer thread runs them. Per path,
medians of interleaved windows of one second:

* ``claim ms`` / ``results ms``: call to answer, beside the busy thread;
* ``alone``: the same with the busy thread stopped (the SQL's own time);
* ``busy thread lost``: how much less work the busy thread did in a window with the
  operations than in the window just before without them, per claimed message.

Read it with care: what a hand-over costs depends on how the other thread waits. A
stand-in that never blocks holds the GIL for the whole switch interval (5 ms) at each
step: a claim of 28 took 7.3 s a row a step against 0.63 s in few steps (18:57 UTC, calm).
The stand-in here waits in ``select`` every fourth turn, about as often as the drain's
loop waits in epoll, and with it the two paths cost about the same (claim 0.9 against
1.2 ms, results 0.39 against 0.32 ms). The measure of the change is the drain itself:
``benchmarks/outbox.py --count-io`` (the loop thread's CPU a message and the claim's
call-to-answer time), docs/benchmarks.md, "The SQLite drain's GIL hand-overs".

    .venv/bin/python benchmarks/sqlite_steps.py [--rows 28] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mailer import Message
from mailer._outbox import sqlite_rows
from mailer._outbox.sqlite import SQLiteStore
from mailer._outbox.store import NewMessage

WINDOW = 1.0
PAUSE = 0.002
#: the busy thread's Python between two system calls (~40 us), and every fourth turn
#: a wait of 50 us in select(): about the drain's event loop, busy 85% of the time and
#: waiting in epoll the rest (a thread that never waits would hold the GIL for the
#: whole switch interval, 5 ms, at each of the writer's steps)
WORK = 1300
IDLE = 50e-6


class Busy(threading.Thread):
    """Python work between short system calls and short waits, counted: a stand-in for
    the event loop."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self.stopping = False

    def run(self) -> None:
        a, b = socket.socketpair()
        x = 0
        while not self.stopping:
            for _ in range(WORK):
                x += 1
            a.send(b"x")
            b.recv(16)
            self.count += 1
            if self.count % 4 == 0:
                select.select([], [], [], IDLE)
        a.close()
        b.close()


def make_file(path: Path, count: int) -> None:
    async def fill() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            for i in range(count):
                m = Message(
                    sender="app@example.com", to=[f"user{i}@example.org"],
                    subject=f"Message {i}", text="x" * 2000,
                )  # fmt: skip
                assert m.message_id
                new = NewMessage(m.message_id, m.model_dump_json().encode(), m.as_bytes(), 0.0)
                await store.add(new)
        finally:
            await store.close()

    asyncio.run(fill())


def requeue(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE outbox SET state = 'queued', claim = NULL, lease_owner = NULL")


def one_op(conn: sqlite3.Connection, rows: int, one_step: bool) -> tuple[float, float] | None:
    """A claim of ``rows`` rows and their results: the seconds each took (None: the
    file ran out of queued rows, queued again for the next)."""
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    now = time.time()
    got = sqlite_rows.claim(
        conn, owner="w", limit=rows, now=now, until=now + 30, max_age=1e9, commit=True,
        one_step=one_step,
    )  # fmt: skip
    conn.execute("COMMIT")
    t1 = time.perf_counter()
    if len(got) < rows:
        requeue(conn)
        return None
    params = [("sent", None, "smtp", None, now, None, c.row, c.claim) for c in got]
    conn.execute("BEGIN IMMEDIATE")
    sqlite_rows.finish(conn, params, one_step=one_step)
    conn.execute("COMMIT")
    return t1 - t0, time.perf_counter() - t1


def window(conn: sqlite3.Connection | None, rows: int, one_step: bool, busy: Busy | None) -> Any:
    """One window: the busy thread's work per second, and the operations' times."""
    c0 = busy.count if busy else 0
    start = time.perf_counter()
    claims: list[float] = []
    results: list[float] = []
    while time.perf_counter() - start < WINDOW:
        if conn is not None and (took := one_op(conn, rows, one_step)) is not None:
            claims.append(took[0])
            results.append(took[1])
        time.sleep(PAUSE)
    elapsed = time.perf_counter() - start
    rate = ((busy.count - c0) / elapsed) if busy else 0.0
    return rate, claims, results, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sqlite-steps-"))
    paths = {True: tmp / "one.db", False: tmp / "by-row.db"}
    for path in paths.values():
        make_file(path, 3000)
    conns = {k: sqlite3.connect(p, isolation_level=None) for k, p in paths.items()}
    for conn in conns.values():
        conn.execute("PRAGMA synchronous=NORMAL")
    stats: dict[bool, dict[str, list[float]]] = {
        k: {"claim": [], "results": [], "alone_claim": [], "alone_results": [], "lost": []}
        for k in paths
    }
    for _ in range(args.rounds):
        for one_step, conn in conns.items():
            requeue(conn)
            _, claims, results, _ = window(conn, args.rows, one_step, None)
            stats[one_step]["alone_claim"] += claims
            stats[one_step]["alone_results"] += results
    busy = Busy()
    busy.start()
    time.sleep(0.2)
    for _ in range(args.rounds):
        for one_step, conn in conns.items():
            requeue(conn)
            base, *_ = window(None, args.rows, one_step, busy)
            rate, claims, results, elapsed = window(conn, args.rows, one_step, busy)
            stats[one_step]["claim"] += claims
            stats[one_step]["results"] += results
            # the busy thread's lost seconds in the window, per message claimed
            lost = (base - rate) / base * elapsed / (len(claims) * args.rows)
            stats[one_step]["lost"].append(lost)
    busy.stopping = True
    busy.join(5)
    print(
        f"claims of {args.rows} rows and their results, SQLite {sqlite3.sqlite_version}; "
        f"medians of {args.rounds} interleaved windows of {WINDOW:.0f} s"
    )
    print(
        f"{'path':12s} {'claim ms':>9s} {'alone':>7s} {'results ms':>11s} {'alone':>7s}"
        f" {'busy thread lost, us a message':>31s}"
    )
    for one_step, label in ((False, "a row a step"), (True, "few steps")):
        s = stats[one_step]
        med = {k: statistics.median(v) for k, v in s.items()}
        print(
            f"{label:12s} {med['claim'] * 1e3:9.2f} {med['alone_claim'] * 1e3:7.2f}"
            f" {med['results'] * 1e3:11.2f} {med['alone_results'] * 1e3:7.2f}"
            f" {med['lost'] * 1e6:31.1f}"
        )
    for conn in conns.values():
        conn.close()


if __name__ == "__main__":
    main()
