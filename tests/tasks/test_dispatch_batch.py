"""``dispatch.batch``: a task delivers its row and up to ``batch - 1`` other due rows at
once. Against both stores, an RQ queue on a real Redis as the engine, a real SMTP
server's ledger: every message is received once however the tasks run (in order,
concurrently, again), a task whose row was taken still helps, and a transient failure of
a row taken by another row's task comes back through the engine's countdown."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from redis import Redis
from rq import Queue
from tests.health.redis_kit import RedisServer

from mailer import ConfigError, Mailer, Message
from mailer.testing import SMTPTestServer

from .conftest import smtp_provider


def config(db_url: str, port: int, redis: str, queue: str, batch: int) -> dict[str, Any]:
    return {
        "providers": [smtp_provider(port)],
        "retry": {"attempts": 1},
        "outbox": {
            "url": db_url, "lease": 5.0, "backoff": {"initial": 30, "jitter": 0.0},
            "dispatch": {"engine": "rq", "redis": redis, "queue": queue, "batch": batch},
        },
    }  # fmt: skip


def message(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


@pytest.fixture
def queue(redis_server: RedisServer) -> Queue:
    return Queue(f"mail-{uuid.uuid4().hex[:8]}", connection=Redis.from_url(redis_server.url))


def task_rows(queue: Queue) -> list[int]:
    return [job.args[0] for job in queue.get_jobs()]


def test_a_task_delivers_a_group_and_the_others_tasks_send_nothing(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name, batch=4)

    async def go() -> list[str]:
        async with Mailer.from_config(cfg) as mailer:
            ids = [await mailer.enqueue(message(i)) for i in range(6)]
            rows = task_rows(queue)
            assert len(rows) == 6
            first = await mailer.outbox.deliver_row(rows[0])
            # its own row and three others, at once
            assert sorted(smtp_server.received().values()) == [1, 1, 1, 1]
            out = [first] + [await mailer.outbox.deliver_row(row) for row in rows[1:]]
            # every task run again: nothing is due, nothing sent
            out += [await mailer.outbox.deliver_row(row) for row in rows]
            assert set(smtp_server.received()) == set(ids)
            return out

    out = anyio.run(go, backend="asyncio")
    # rows 2-4 were taken by the first task; row 5's task delivers 5 and 6
    assert out[:6] == ["sent"] * 6
    assert out[6:] == ["sent"] * 6
    assert list(smtp_server.received().values()) == [1] * 6


def test_concurrent_tasks_share_the_rows_never_twice(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    """Every task at once, each claiming up to 5 rows: each message once."""
    smtp_server.state.fail("DATA_END", "delay:0.05")
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name, batch=5)
    n = 20

    async def go() -> None:
        async with Mailer.from_config(cfg) as mailer:
            for i in range(n):
                await mailer.enqueue(message(i))
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for row in task_rows(queue) * 2:  # and every task delivered twice
                        tg.start_soon(mailer.outbox.deliver_row, row)
            stats = await mailer.outbox.stats()
            assert stats.get("sent") == n, stats

    anyio.run(go, backend="asyncio")
    received = smtp_server.received()
    assert len(received) == n and set(received.values()) == {1}


def test_a_taken_rows_retry_goes_through_the_engine(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    """The second row fails for now while the first row's task sends it: its next try
    is published with the backoff, as its own task would have."""
    smtp_server.state.fail("RCPT", "451 4.3.0 try later", times=1)
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name, batch=2)

    async def go() -> tuple[str, str]:
        async with Mailer.from_config(cfg) as mailer:
            await mailer.enqueue(message(0))
            await mailer.enqueue(message(1))
            first, second = task_rows(queue)
            queue.empty()
            return (await mailer.outbox.deliver_row(first),
                    await mailer.outbox.deliver_row(second))  # fmt: skip

    states = anyio.run(go, backend="asyncio")
    # one of the two failed for now (the first RCPT the server saw), the other was sent
    assert sorted(states) in (["not due", "sent"], ["queued", "sent"])
    assert sum(smtp_server.received().values()) == 1
    scheduled = queue.scheduled_job_registry
    assert scheduled.count == 1
    job = queue.fetch_job(scheduled.get_job_ids()[0])
    assert job is not None and job.func_name == "mailer.rq.deliver"


@pytest.mark.parametrize("batch", [0, -1, 1025, "many"])
def test_a_bad_batch_is_refused_before_any_io(batch: Any) -> None:
    cfg = config("sqlite:///unused.db", 25, "redis://127.0.0.1:1", "mail", batch)
    with pytest.raises((ConfigError, ValueError), match="batch"):
        Mailer.from_config(cfg)
