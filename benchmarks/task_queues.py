"""Delivery on Celery against ``mailer worker``, on the same SQLite outbox.

Into Postfix's C smtp-sink on loopback, 2 KB messages, the SMTP provider pooled (5
connections), a Redis broker started here (tests/health/redis_kit.py):

* dispatch   - ``enqueue`` N messages one after another: with ``dispatch`` (the row, then
               its Celery task published) against without (the row only: the reference);
* delivery   - N messages stored with the workers stopped, then delivered: messages per
               second between the first and the last one sent (the rows' own times, so a
               worker's start-up is not counted), ``mailer worker`` (16 at once, one
               process) against ``celery worker``: prefork (``-c`` as given) with
               ``dispatch.batch`` 1 (the default) and 16; threads (16) with and without
               the workaround of celery#6941 (benchmarks/_celery_app.py);
* latency    - with the workers running and idle, M messages enqueued 20 ms apart: from
               the row's creation to its ``sent`` record (p50, p99), so the added latency
               of the engine against ``mailer worker`` polling every ``poll_interval``
               (1 s by default; 0.05 s also shown).

    .venv/bin/python benchmarks/task_queues.py [--count 1000] [--latency 200] [--prefork 4]
        [--only NAME-PART]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.health.redis_kit

from _common import postfix_sink, table  # noqa: E402

from mailer import Mailer, Message  # noqa: E402


def config(port: int, db: Path, batch: int | None, poll: float) -> dict[str, Any]:
    """The Mailer config; ``batch`` None: no dispatch (``mailer worker``), else the
    Celery dispatch with that ``dispatch.batch``."""
    outbox: dict[str, Any] = {"url": f"sqlite:///{db}", "poll_interval": poll}
    if batch is not None:
        outbox["dispatch"] = {"engine": "celery", "app": "_celery_app:app", "batch": batch}
    provider = {"type": "smtp", "name": "sink", "config": {
        "host": "127.0.0.1", "port": port, "pool": True, "max_connections": 5,
        "name": "bench.local"}}  # fmt: skip
    return {"providers": [provider], "outbox": outbox}


def message(i: int) -> Message:
    return Message(sender="bench@example.com", to=[f"u{i}@example.org"], subject=f"m {i}",
                   text="x" * 2048)  # fmt: skip


async def enqueue(cfg: dict[str, Any], n: int, spacing: float = 0.0) -> float:
    """Enqueue n messages; messages per second."""
    async with Mailer.from_config(cfg) as mailer:
        await mailer.outbox.stats()  # open the store
        start = time.perf_counter()
        for i in range(n):
            await mailer.enqueue(message(i))
            if spacing:
                await asyncio.sleep(spacing)
        return n / (time.perf_counter() - start)


def sent(db: Path) -> list[tuple[float, float]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT created, updated FROM outbox WHERE state = 'sent'").fetchall()


def wait_sent(db: Path, n: int, timeout: float = 600) -> list[tuple[float, float]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sent(db)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise RuntimeError(f"only {len(sent(db))} of {n} sent in {timeout} s")


def rate(rows: list[tuple[float, float]]) -> float:
    times = sorted(updated for _, updated in rows)
    return (len(times) - 1) / (times[-1] - times[0])


def percentiles(rows: list[tuple[float, float]]) -> tuple[float, float]:
    lat = sorted(updated - created for created, updated in rows)
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=HERE, start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(10)


def case(
    tmp: Path,
    name: str,
    port: int,
    broker: str,
    n: int,
    m: int,
    batch: int | None,
    poll: float,
    worker: Callable[[Path], list[str]],
    extra_env: dict[str, str],
) -> dict[str, float]:
    """One worker kind: dispatch rate, delivery rate, latency."""
    db = tmp / f"{name}.db"
    cfg = config(port, db, batch, poll)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, **extra_env, "MAILER_CONFIG": str(path), "BROKER_URL": broker,
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src")])}  # fmt: skip
    os.environ.update({"MAILER_CONFIG": str(path), "BROKER_URL": broker})
    enqueue_rate = asyncio.run(enqueue(cfg, n))
    proc = start(worker(path), env, tmp / f"{name}.log")
    try:
        delivery = rate(wait_sent(db, n))
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM outbox WHERE state = 'sent'")
        time.sleep(1.0)
        asyncio.run(enqueue(cfg, m, spacing=0.02))
        p50, p99 = percentiles(wait_sent(db, m))
    finally:
        stop(proc)
    return {"enqueue": enqueue_rate, "delivery": delivery, "p50": p50, "p99": p99}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--prefork", type=int, default=4)
    ap.add_argument("--only", help="the cases whose name holds this (and the reference)")
    args = ap.parse_args()
    from tests.health.redis_kit import RedisServer

    py = sys.executable
    mailer_worker = lambda path: [py, "-m", "mailer", "worker", "--config", str(path)]  # noqa: E731
    celery = [py, "-m", "celery", "-A", "_celery_app", "worker", "--loglevel", "WARNING",
              "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    prefork = [*celery, "--pool", "prefork", "--concurrency", str(args.prefork)]
    threads = [*celery, "--pool", "threads", "--concurrency", "16"]
    workaround = {"CELERY_6941_WORKAROUND": "1"}  # benchmarks/_celery_app.py
    cases: list[tuple[str, int | None, float, Callable[[Path], list[str]], dict[str, str]]] = [
        ("mailer worker (poll 1 s, default)", None, 1.0, mailer_worker, {}),
        ("mailer worker (poll 0.05 s)", None, 0.05, mailer_worker, {}),
        (f"celery prefork -c {args.prefork} (batch 1, default)", 1, 1.0, lambda p: prefork, {}),
        (f"celery prefork -c {args.prefork}, batch 16", 16, 1.0, lambda p: prefork, {}),
        ("celery threads -c 16 (batch 1)", 1, 1.0, lambda p: threads, {}),
        ("celery threads -c 16, celery#6941 workaround", 1, 1.0, lambda p: threads, workaround),
    ]  # fmt: skip
    if args.only:
        cases = [c for c in cases if args.only in c[0] or c[0] == cases[0][0]]
    results = {}
    with postfix_sink() as port, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(tmp / "redis").start()
        try:
            for i, (name, batch, poll, worker, env) in enumerate(cases):
                results[name] = case(tmp, f"c{i}", port, redis.url, args.count, args.latency,
                                     batch, poll, worker, env)  # fmt: skip
        finally:
            redis.stop()
    ref = results[cases[0][0]]
    rows = [
        [name, f"{r['enqueue']:,.0f}", f"{r['enqueue'] / ref['enqueue']:.2f}x",
         f"{r['delivery']:,.0f}", f"{r['delivery'] / ref['delivery']:.2f}x",
         f"{r['p50']:,.1f}", f"{r['p99']:,.1f}"]
        for name, r in results.items()
    ]  # fmt: skip
    print(f"{args.count} messages (delivery), {args.latency} (latency), 2 KB, smtp-sink")
    print(table(["worker", "enqueue/s", "vs ref", "delivered/s", "vs ref", "p50 ms", "p99 ms"],
                rows))  # fmt: skip


if __name__ == "__main__":
    main()
