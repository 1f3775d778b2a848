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
    assert all(r["state"] == "sent" for r in rows(tmp_path))

    async def again() -> None:  # every task published a second time: a redelivery
        pool = await create_pool(RedisSettings.from_dsn(own_redis.url))
        for r in rows(tmp_path):
            await pool.enqueue_job("mailer.deliver", r["id"])
        await pool.aclose()

    anyio.run(again, backend="asyncio")
    anyio.run(anyio.sleep, 1.5, backend="asyncio")
    assert sorted(smtp_server.received().values()) == [1] * N
