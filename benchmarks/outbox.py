"""The durable outbox: enqueue latency, and worker throughput against sending directly.

Into Postfix's C smtp-sink on loopback, 2 KB messages, the SMTP provider pooled (5
connections) in every case, medians of interleaved rounds:

* direct        - ``mailer.send`` of N messages, 16 at once (the reference);
* sqlite        - ``enqueue`` N messages one after another (latency p50/p99: each is
                  committed, fsync'd, before it returns), then ``drain`` them with 16 at
                  once (throughput: claim, commit-point record, send, result, group-
                  committed), with the default ``synchronous=auto`` (fsync'd: enqueues
                  and commit-point records; not: claims and results);
* sqlite-full   - the same with ``?synchronous=full`` (every transaction fsync'd);
* sqlite-normal - the same with ``?synchronous=normal`` (none is: durable against a
                  crashed process, not against power loss);
* postgres      - the same on a throwaway local cluster (tests/pgcluster.py) with a
                  user's defaults for durability: fsync and synchronous_commit on (the
                  run prints them), so every claim, commit-point record and result is
                  flushed before it returns.

    .venv/bin/python benchmarks/outbox.py [--count 2000] [--rounds 3] [--no-postgres]
        [--only direct,postgres] [--commit-wait]

``--commit-wait`` also times, for every outbox send, how long its attempt waited at the
commit point for the commit-point record (the SMTP connection idles meanwhile, after
DATA's 354): p50, p90 and mean per case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pgcluster

from _common import postfix_sink

from mailer import Mailer, Message

CONCURRENCY = 16
#: seconds each outbox send's attempt spent in AttemptContext.commit (--commit-wait)
COMMIT_WAITS: list[float] = []


def time_commit_waits() -> None:
    """Wrap AttemptContext.commit to record how long attempts with hooks (the outbox's)
    wait in it; direct sends have none and are not counted."""
    from mailer._attempt import AttemptContext

    commit = AttemptContext.commit

    async def timed(self: AttemptContext) -> None:
        started = time.perf_counter()
        await commit(self)
        if self.hooks:
            COMMIT_WAITS.append(time.perf_counter() - started)

    AttemptContext.commit = timed  # type: ignore[method-assign]


def providers(port: int) -> list[dict[str, Any]]:
    return [{"type": "smtp", "name": "sink", "config": {
        "host": "127.0.0.1", "port": port, "pool": True, "max_connections": 5,
        "name": "bench.local"}}]  # fmt: skip


def messages(n: int) -> list[Message]:
    body = "x" * 2048
    return [Message(sender="bench@example.com", to=[f"u{i}@example.org"], subject=f"m {i}",
                    text=body) for i in range(n)]  # fmt: skip


async def direct(port: int, n: int) -> dict[str, float]:
    msgs = messages(n)
    sem = asyncio.Semaphore(CONCURRENCY)
    async with Mailer.from_config({"providers": providers(port)}) as mailer:
        await mailer.send(messages(1)[0])  # warm the pool

        async def one(m: Message) -> None:
            async with sem:
                await mailer.send(m)

        start = time.perf_counter()
        await asyncio.gather(*(one(m) for m in msgs))
        return {"rate": n / (time.perf_counter() - start)}


async def outbox(port: int, n: int, url: str) -> dict[str, float]:
    msgs = messages(n)
    box = {"url": url, "concurrency": CONCURRENCY, "poll_interval": 0.05}
    config = {"providers": providers(port), "outbox": box}
    async with Mailer.from_config(config) as mailer:
        await mailer.outbox.stats()  # open (and create) the store
        await mailer.send(messages(1)[0])  # warm the pool
        latencies = []
        for m in msgs:
            t0 = time.perf_counter()
            await mailer.enqueue(m)
            latencies.append(time.perf_counter() - t0)
        COMMIT_WAITS.clear()
        start = time.perf_counter()
        done = await mailer.drain(timeout=600)
        elapsed = time.perf_counter() - start
        assert done == {"sent": n}, done
    latencies.sort()
    result = {
        "rate": n / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }
    if COMMIT_WAITS:
        waits = sorted(COMMIT_WAITS)
        result |= {
            "wait_p50": waits[len(waits) // 2] * 1000,
            "wait_p90": waits[int(len(waits) * 0.9)] * 1000,
            "wait_mean": statistics.mean(waits) * 1000,
        }
    return result


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    from tests.pgcluster import PostgresCluster

    with PostgresCluster() as pg:
        yield pg.dsn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--only", help="comma-separated cases to run (direct always runs)")
    ap.add_argument("--commit-wait", action="store_true", help="time the wait at the commit point")
    args = ap.parse_args()
    if args.commit_wait:
        time_commit_waits()
    only = None if args.only is None else {"direct", *args.only.split(",")}
    results: dict[str, list[dict[str, float]]] = {}
    with postfix_sink() as port, tempfile.TemporaryDirectory() as tmp, \
            (contextlib.nullcontext(None) if args.no_postgres else postgres()) as dsn:  # fmt: skip
        import asyncpg  # noqa: F401 - fail early when the driver is missing

        settings = "" if dsn is None else asyncio.run(_pg_settings(dsn))

        n = args.count
        for r in range(args.rounds):
            cases: dict[str, Any] = {
                "direct": lambda: direct(port, n),
                "sqlite": lambda r=r: outbox(port, n, f"sqlite:///{tmp}/auto-{r}.db"),
                "sqlite-full": lambda r=r: outbox(
                    port, n, f"sqlite:///{tmp}/full-{r}.db?synchronous=full"
                ),
                "sqlite-normal": lambda r=r: outbox(
                    port, n, f"sqlite:///{tmp}/normal-{r}.db?synchronous=normal"
                ),
            }
            if dsn is not None:
                cases["postgres"] = lambda r=r: _pg_round(port, n, dsn, r)
            for name, case in cases.items():
                if only is not None and name not in only:
                    continue
                results.setdefault(name, []).append(asyncio.run(case()))
    ref = statistics.median(r["rate"] for r in results["direct"])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.count} messages of 2 KB into smtp-sink, {CONCURRENCY} at once, 5 SMTP "
          f"connections; medians of {args.rounds} rounds; load average {load}"
          f"{settings}")  # fmt: skip
    print(f"{'case':14s} {'msg/s':>8s} {'x direct':>9s} {'enqueue p50':>12s} {'p99':>8s}")
    for name, runs in results.items():
        rate = statistics.median(x["rate"] for x in runs)
        p50 = statistics.median(x.get("p50", 0.0) for x in runs)
        p99 = statistics.median(x.get("p99", 0.0) for x in runs)
        lat = f"{p50:9.2f} ms {p99:6.2f} ms" if name != "direct" else ""
        if "wait_p50" in runs[0]:
            wait = [
                statistics.median(x[k] for x in runs) for k in ("wait_p50", "wait_p90", "wait_mean")
            ]
            lat += "   commit wait p50 {:.3f} p90 {:.3f} mean {:.3f} ms".format(*wait)
        print(f"{name:14s} {rate:8.0f} {rate / ref:8.2f}x {lat}")


async def _pg_settings(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('wal_sync_method')"
        )
    finally:
        await conn.close()
    assert row is not None
    return f"; postgres fsync={row[0]} synchronous_commit={row[1]} wal_sync_method={row[2]}"


async def _pg_round(port: int, n: int, dsn: str, r: int) -> dict[str, float]:
    import asyncpg

    name = f"bench_{r}_{int(time.time())}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return await outbox(port, n, dsn.rsplit("/", 1)[0] + f"/{name}")


if __name__ == "__main__":
    main()
