"""psycopg 3 (async) against asyncpg, on the statements the Postgres outbox runs.

Each round, on a fresh table in a throwaway cluster (tests/pgcluster.py): N inserts
(one transaction each, ``concurrency`` at once, as ``enqueue`` does), then claim + mark +
finish cycles (``FOR UPDATE SKIP LOCKED``, as workers do). Both drivers use a pool of
``pool`` connections. The rounds alternate drivers; the medians are reported.

    .venv/bin/python benchmarks/outbox_pg_drivers.py [--n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgcluster import PostgresCluster

SCHEMA = """
DROP TABLE IF EXISTS bench;
CREATE TABLE bench (id BIGSERIAL PRIMARY KEY, message_id TEXT UNIQUE, state TEXT,
                    message BYTEA, next_at DOUBLE PRECISION, claim TEXT, committed BOOL);
CREATE INDEX ON bench (state, next_at);
"""
INSERT = "INSERT INTO bench (message_id, state, message, next_at) VALUES ($1, 'queued', $2, $3)"
CLAIM = """UPDATE bench SET state = 'sending', claim = $1 WHERE id IN (
    SELECT id FROM bench WHERE state = 'queued' AND next_at <= $2
    ORDER BY next_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, message"""
MARK = "UPDATE bench SET committed = true WHERE id = $1 AND claim = $2"
FINISH = "UPDATE bench SET state = 'sent' WHERE id = $1 AND claim = $2"
BODY = b"x" * 2000


def pyformat(sql: str) -> str:
    for i in range(9, 0, -1):
        sql = sql.replace(f"${i}", "%s")
    return sql


async def run_asyncpg(dsn: str, n: int, concurrency: int, pool_size: int) -> tuple[float, float]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)

    async def insert(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.execute(INSERT, f"<{i}@b>", BODY, time.time())

    async def cycle(worker: int) -> int:
        done = 0
        while True:
            async with pool.acquire() as conn:
                rows = await conn.fetch(CLAIM, f"w{worker}", time.time(), 4)
            if not rows:
                return done
            for row in rows:
                async with pool.acquire() as conn:
                    await conn.execute(MARK, row["id"], f"w{worker}")
                async with pool.acquire() as conn:
                    await conn.execute(FINISH, row["id"], f"w{worker}")
                done += 1

    result = await _time(n, concurrency, insert, cycle)
    await pool.close()
    return result


async def run_psycopg(dsn: str, n: int, concurrency: int, pool_size: int) -> tuple[float, float]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(dsn, min_size=pool_size, max_size=pool_size, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute(SCHEMA)
    insert_sql, claim_sql = pyformat(INSERT), pyformat(CLAIM)
    mark_sql, finish_sql = pyformat(MARK), pyformat(FINISH)

    async def insert(i: int) -> None:
        async with pool.connection() as conn:
            await conn.execute(insert_sql, (f"<{i}@b>", BODY, time.time()))

    async def cycle(worker: int) -> int:
        done = 0
        while True:
            async with pool.connection() as conn:
                rows = await (
                    await conn.execute(claim_sql, (f"w{worker}", time.time(), 4))
                ).fetchall()
            if not rows:
                return done
            for row in rows:
                async with pool.connection() as conn:
                    await conn.execute(mark_sql, (row[0], f"w{worker}"))
                async with pool.connection() as conn:
                    await conn.execute(finish_sql, (row[0], f"w{worker}"))
                done += 1

    result = await _time(n, concurrency, insert, cycle)
    await pool.close()
    return result


async def _time(
    n: int,
    concurrency: int,
    insert: Callable[[int], Awaitable[None]],
    cycle: Callable[[int], Awaitable[int]],
) -> tuple[float, float]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await insert(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    inserts = n / (time.perf_counter() - start)
    start = time.perf_counter()
    done = sum(await asyncio.gather(*(cycle(w) for w in range(concurrency))))
    cycles = done / (time.perf_counter() - start)
    assert done == n, done
    return inserts, cycles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pool", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"psycopg": [], "asyncpg": []}
    runners: dict[str, Any] = {"psycopg": run_psycopg, "asyncpg": run_asyncpg}
    with PostgresCluster() as pg:
        for _ in range(args.rounds):
            for name, runner in runners.items():
                results[name].append(
                    asyncio.run(runner(pg.dsn, args.n, args.concurrency, args.pool))
                )
    print(
        f"{args.n} messages, {args.concurrency} at once, pool of {args.pool}; "
        f"medians of {args.rounds} rounds"
    )
    for name, runs in results.items():
        ins = statistics.median(r[0] for r in runs)
        cyc = statistics.median(r[1] for r in runs)
        print(f"{name:8s} inserts {ins:8.0f}/s   claim+mark+finish {cyc:8.0f} msg/s")


if __name__ == "__main__":
    main()
