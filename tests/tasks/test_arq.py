"""A real arq worker (``arq mailer.arq.WorkerSettings``, config from ``$MAILER_CONFIG``)
delivers what the outbox published, each message once, and a task run again sends
nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
from arq import create_pool
from arq.connections import RedisSettings
from tests.health.redis_kit import RedisServer

from mailer import Mailer
from mailer.testing import SMTPTestServer

from .conftest import Workers, message, rows, wait, write_config

N = 30


def test_arq_worker_delivers_each_message_once(
    tmp_path: Path, smtp_server: SMTPTestServer, own_redis: RedisServer, workers: Any
) -> None:
    config = write_config(tmp_path, smtp_server.port, {"engine": "arq", "redis": own_redis.url})
    w: Workers = workers({"MAILER_CONFIG": str(config)})
    w.start([str(Path(sys.executable).parent / "arq"), "mailer.arq.WorkerSettings"])

    async def enqueue() -> None:
        async with Mailer.from_config(config) as mailer:
            for i in range(N):
                await mailer.enqueue(message(i))

    anyio.run(enqueue, backend="asyncio")
    wait(lambda: len(smtp_server.received()) >= N, 60, "every message", w)
    # the server counts a message before its 250 reaches the worker, which records
    # `sent` after it: wait for the rows too (checking them at once raced the last one)
    wait(lambda: all(r["state"] == "sent" for r in rows(tmp_path)), 30, "every row sent", w)

    async def again() -> list[Any]:  # every task published a second time: a redelivery
        pool = await create_pool(RedisSettings.from_dsn(own_redis.url))
        try:
            jobs = [await pool.enqueue_job("mailer.deliver", r["id"]) for r in rows(tmp_path)]
            # each redelivered task has run (its result is in Redis), not "1.5 s passed"
            return [await job.result(timeout=60, poll_delay=0.1) for job in jobs if job]
        finally:
            await pool.aclose()

    results = anyio.run(again, backend="asyncio")
    assert results == ["sent"] * N, results  # each found its row sent, and sent nothing
    assert sorted(smtp_server.received().values()) == [1] * N
