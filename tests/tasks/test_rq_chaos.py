"""Real RQ workers deliver 300 messages from the outbox while one is SIGKILLed twice
(and started again), or while Redis restarts (losing every queued job): each message is
received once, except rows ending ``unknown`` (at most once each, no more than the
kills), and no row is left queued after the sweep (``mailer.rq.sweep``). On both stores
(the Postgres run of a broker restart is in ``make soak``)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis import Redis
from rq import Queue
from tests.health.redis_kit import RedisServer

from mailer import Mailer
from mailer.testing import SMTPTestServer

from .conftest import SOAK, Workers, check_ledger, message, settle, wait, write_config

N = 300


def rq_worker(w: Workers, url: str) -> Any:
    return w.start([
        sys.executable, "-m", "rq.cli", "worker", "--worker-class", "rq.worker.SimpleWorker",
        "--url", url, "--with-scheduler", "--logging_level", "WARNING", "mail",
    ])  # fmt: skip


def enqueue_all(config: Path, n: int) -> None:
    async def go() -> None:
        async with Mailer.from_config(config) as mailer:
            for i in range(n):
                await mailer.enqueue(message(i))

    anyio.run(go, backend="asyncio")


@pytest.mark.parametrize(
    ("fault", "store"),
    [
        ("kill", "sqlite"),
        ("broker restart", "sqlite"),
        ("kill", "postgresql"),
        pytest.param("broker restart", "postgresql", marks=SOAK),
    ],
)
def test_rq_delivers_each_message_once(
    fault: str,
    store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    own_redis: RedisServer,
    workers: Any,
) -> None:
    smtp_server.state.fail("DATA_END", "delay:1.5:250 2.0.0 queued", times=2)
    smtp_server.state.fail("DATA_END", "delay:0.02")
    url = str(request.getfixturevalue("pg_url")) if store == "postgresql" else None
    where = url or tmp_path
    config = write_config(
        tmp_path, smtp_server.port, {"engine": "rq", "redis": own_redis.url, "queue": "mail"}, url
    )
    w: Workers = workers({"MAILER_CONFIG": str(config)})
    running = [rq_worker(w, own_redis.url), rq_worker(w, own_redis.url)]
    enqueue_all(config, N)

    def received() -> int:
        return sum(smtp_server.received().values())

    kills = 0
    if fault == "kill":
        for at in (1, N // 2):  # in a slow send, then anywhere
            wait(lambda at=at: received() >= at, 60, f"{at} messages", w)
            victim = running.pop(0)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            kills += 1
            running.append(rq_worker(w, own_redis.url))
    else:
        wait(lambda: received() >= N // 3, 60, f"{N // 3} messages", w)
        own_redis.stop()  # no persistence: every job in Redis is lost
        own_redis.start()

    queue = Queue("mail", connection=Redis.from_url(own_redis.url))

    def sweep() -> None:
        # An RQ worker exits when it loses Redis; its supervisor (here: the test)
        # starts it again.
        for i, proc in enumerate(running):
            if proc.poll() is not None:
                running[i] = rq_worker(w, own_redis.url)
        queue.enqueue("mailer.rq.sweep")

    settle(where, sweep, 60, w)
    wait(lambda: received() >= N - kills, 30, "the ledger", w)
    by_state = check_ledger(where, smtp_server, kills)
    assert by_state.get("sent", 0) >= N - kills
