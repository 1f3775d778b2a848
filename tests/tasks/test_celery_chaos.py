"""A real Celery worker (prefork, 4 processes, Redis broker, ``task_acks_late``, a
visibility timeout shorter than a slow send) delivers 300 messages from the outbox while
its pool processes are SIGKILLed, or its broker restarts: each message is received once,
except rows ending ``unknown`` (at most once each, no more than the kills), and no row
is left queued after the sweep. On both stores (the Postgres runs of a broker restart are
in ``make soak``), and with ``dispatch.batch`` (16 rows a task: at most that many
``unknown`` a kill). Then the counter-example: ``send`` inside a naive Celery task, under
the same faults, delivers messages twice.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from celery import Celery
from tests.health.redis_kit import RedisServer

from mailer import Mailer
from mailer.testing import SMTPTestServer

from .conftest import (
    SOAK,
    Workers,
    check_ledger,
    kill_a_child,
    message,
    settle,
    wait,
    write_config,
)

N = 300
#: slow sends (longer than the visibility timeout): Redis redelivers them meanwhile
SLOW = 6


def celery_worker(w: Workers) -> Any:
    return w.start([
        sys.executable, "-m", "celery", "-A", "tests.tasks.celery_app", "worker",
        "--pool", "prefork", "--concurrency", "4", "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])  # fmt: skip


def producer(monkeypatch: pytest.MonkeyPatch, redis: RedisServer) -> None:
    """The test process publishes to this test's Redis (tests/tasks/producer.py)."""
    monkeypatch.setenv("BROKER_URL", redis.url)
    monkeypatch.delitem(sys.modules, "tests.tasks.producer", raising=False)


def enqueue_all(config: Path, n: int) -> None:
    async def go() -> None:
        async with Mailer.from_config(config) as mailer:
            for i in range(n):
                await mailer.enqueue(message(i))

    anyio.run(go, backend="asyncio")


@pytest.mark.parametrize(
    ("fault", "store", "batch"),
    [
        ("kill", "sqlite", 1),
        ("broker restart", "sqlite", 1),
        ("kill", "postgresql", 1),
        ("kill", "postgresql", 16),
        pytest.param("broker restart", "postgresql", 1, marks=SOAK),
        pytest.param("broker restart", "sqlite", 16, marks=SOAK),
    ],
)
def test_celery_delivers_each_message_once(
    fault: str,
    store: str,
    batch: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    own_redis: RedisServer,
    workers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the slow ones first (faults match in order; the server queues the message, then
    # answers late: a kill then lands after the commit point), then the rest
    smtp_server.state.fail("DATA_END", "delay:1.5:250 2.0.0 queued", times=SLOW)
    smtp_server.state.fail("DATA_END", "delay:0.02")
    producer(monkeypatch, own_redis)
    url = str(request.getfixturevalue("pg_url")) if store == "postgresql" else None
    where = url or tmp_path
    config = write_config(
        tmp_path,
        smtp_server.port,
        {"engine": "celery", "app": "tests.tasks.producer:app", "batch": batch},
        url,
    )
    w: Workers = workers({"MAILER_CONFIG": str(config), "BROKER_URL": own_redis.url})
    worker = celery_worker(w)
    enqueue_all(config, N)  # publishes one task per message, to the Redis broker

    def received() -> int:
        return sum(smtp_server.received().values())

    kills = 0
    if fault == "kill":
        for at in (4, N // 2):  # in the slow sends, then anywhere
            wait(lambda at=at: received() >= at, 60, f"{at} messages", w)
            kill_a_child(worker.pid, w)  # the pool master starts another
            kills += 1
    else:
        wait(lambda: received() >= N // 3, 60, f"{N // 3} messages", w)
        own_redis.stop()  # no persistence: every task in the broker is lost
        own_redis.start()

    app = Celery("sweeper", broker=own_redis.url)
    settle(where, lambda: app.send_task("mailer.sweep"), 60, w)  # as beat would
    wait(lambda: received() >= N - kills * batch, 30, "the ledger", w)
    by_state = check_ledger(where, smtp_server, kills, in_flight=batch)
    assert by_state.get("sent", 0) >= N - kills * batch


def test_naive_send_in_a_celery_task_duplicates(
    tmp_path: Path, smtp_server: SMTPTestServer, own_redis: RedisServer, workers: Any
) -> None:
    """The documented counter-example (docs/task-queues.md): the same worker and fault,
    but the task calls ``send``. A pool process killed after the server queued its
    message (the reply is slow) loses the task's acknowledgement; ``acks_late`` hands
    the task to another process, which sends the message again."""
    smtp_server.state.fail("DATA_END", "delay:2:250 2.0.0 queued", times=8)
    config = write_config(tmp_path, smtp_server.port, None)
    w: Workers = workers({"MAILER_CONFIG": str(config), "BROKER_URL": own_redis.url, "NAIVE": "1"})
    worker = celery_worker(w)
    app = Celery("producer", broker=own_redis.url)
    n = 40
    for i in range(n):
        app.send_task("naive.send", args=(i,))
    # four slow sends in flight, each message already queued by the server
    wait(lambda: len(smtp_server.received()) >= 4, 60, "four messages in flight", w)
    kill_a_child(worker.pid, w)
    wait(lambda: len(smtp_server.received()) >= n, 60, "every message once at least", w)
    wait(lambda: sum(smtp_server.received().values()) > n, 30, "a duplicate", w)
    duplicates = {m: c for m, c in smtp_server.received().items() if c > 1}
    assert duplicates, "the naive task sent nothing twice this time"
