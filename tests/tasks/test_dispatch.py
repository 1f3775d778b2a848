"""Dispatch without a worker process: the task body run directly, against both stores,
an RQ queue on a real Redis as the engine, a real SMTP server's ledger. A task run again
sends nothing; a transient failure comes back through the engine's countdown; the sweep
publishes what was lost; bad config and bad task arguments fail before any I/O."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis import Redis
from rq import Queue
from tests.health.redis_kit import RedisServer
from tests.outbox.conftest import execute

from mailer import ConfigError, Mailer, Message, SyncMailer
from mailer._integrations import tasks
from mailer._outbox import OutboxConfig
from mailer.testing import SMTPTestServer

from .conftest import smtp_provider


def config(db_url: str, port: int, redis: str, queue: str, **dispatch: Any) -> dict[str, Any]:
    return {
        "providers": [smtp_provider(port)],
        "retry": {"attempts": 1},
        "outbox": {
            "url": db_url, "lease": 1.0, "backoff": {"initial": 30, "jitter": 0.0},
            "dispatch": {"engine": "rq", "redis": redis, "queue": queue, **dispatch},
        },
    }  # fmt: skip


def message(i: int = 0) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


@pytest.fixture
def queue(redis_server: RedisServer) -> Queue:
    return Queue(f"mail-{uuid.uuid4().hex[:8]}", connection=Redis.from_url(redis_server.url))


def run(fn: Any) -> Any:
    return anyio.run(fn, backend="asyncio")


def test_a_task_run_again_sends_nothing(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name)

    async def go() -> list[str]:
        async with Mailer.from_config(cfg) as mailer:
            mid = await mailer.enqueue(message())
            (job,) = queue.get_jobs()
            assert job.func_name == "mailer.rq.deliver"
            (row,) = job.args
            first = await mailer.outbox.deliver_row(row)
            again = await mailer.outbox.deliver_row(row)  # redelivered: the row is sent
            assert smtp_server.received()[mid] == 1
            # unknown: may have been delivered; a task never sends it
            execute(db_url, "UPDATE outbox SET state = 'unknown' WHERE id = ?", row)
            unknown = await mailer.outbox.deliver_row(row)
            missing = await mailer.outbox.deliver_row(row + 1000)
            return [first, again, unknown, missing]

    assert run(go) == ["sent", "sent", "unknown", "missing"]
    assert sum(smtp_server.received().values()) == 1


def test_a_row_leased_by_a_live_task_is_left_alone(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name)

    async def go() -> tuple[str, str]:
        async with Mailer.from_config(cfg) as mailer:
            await mailer.enqueue(message())
            (row,) = queue.get_jobs()[0].args
            store: Any = mailer.outbox.store
            held = await store.claim_row(row, "other-worker", lease=30.0, max_age=3600.0)
            assert not isinstance(held, str)
            leased = await mailer.outbox.deliver_row(row)
            # the other task's lease expires before it recorded a commit point: safe
            execute(db_url, "UPDATE outbox SET lease_until = 0 WHERE id = ?", row)
            return leased, await mailer.outbox.deliver_row(row)

    assert run(go) == ("sending", "sent")
    assert sum(smtp_server.received().values()) == 1


def test_a_transient_failure_comes_back_through_the_engine_countdown(
    db_url: str, smtp_server: SMTPTestServer, redis_server: RedisServer, queue: Queue
) -> None:
    smtp_server.state.fail("DATA_END", "451 4.3.0 try later", times=1)
    cfg = config(db_url, smtp_server.port, redis_server.url, queue.name)

    async def go() -> tuple[str, str]:
        async with Mailer.from_config(cfg) as mailer:
            await mailer.enqueue(message())
            (row,) = queue.get_jobs()[0].args
            queue.empty()
            state = await mailer.outbox.deliver_row(row)
            early = await mailer.outbox.deliver_row(row)  # a copy before its time
            return state, early

    assert run(go) == ("queued", "not due")
    # rescheduled with the outbox's backoff (30 s) in RQ's scheduled registry
    scheduled = queue.scheduled_job_registry
    assert scheduled.count == 1
    job = queue.fetch_job(scheduled.get_job_ids()[0])
    assert job is not None and job.func_name == "mailer.rq.deliver"
    assert sum(smtp_server.received().values()) == 0


def test_the_sweep_publishes_a_task_lost_while_the_broker_was_down(
    db_url: str, smtp_server: SMTPTestServer, own_redis: RedisServer
) -> None:
    cfg = config(db_url, smtp_server.port, own_redis.url, "mail", sweep_after=0.2)
    own_redis.stop()

    async def go() -> tuple[int, int, dict[str, dict[str, int]]]:
        async with Mailer.from_config(cfg) as mailer:
            await mailer.enqueue(message())  # stored; its task could not be published
            own_redis.start()
            await anyio.sleep(0.3)
            swept = await mailer.outbox.sweep()
            again = await mailer.outbox.sweep()  # just published: not again
            return swept, again, await mailer.outbox.dispatch_stats()

    swept, again, stats = run(go)
    assert (swept, again) == (1, 0)
    assert stats == {"rq": {"rows": 1, "published": 2, "queued": 1}}
    queue = Queue("mail", connection=Redis.from_url(own_redis.url))
    assert [job.func_name for job in queue.get_jobs()] == ["mailer.rq.deliver"]


@pytest.mark.parametrize(
    ("dispatch", "error"),
    [
        ({"engine": "rq"}, "needs redis"),
        ({"engine": "arq", "redis": "http://x"}, "redis://"),
        ({"engine": "celery", "app": "proj.celery.app"}, "module:attribute"),
        ({"engine": "django", "queue": "mail"}, "takes no queue"),
        ({"engine": "kafka"}, "engine"),
    ],
)
def test_bad_dispatch_config_is_refused(dispatch: dict[str, Any], error: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=error):
        OutboxConfig.model_validate({"url": "sqlite:///x.db", "dispatch": dispatch})


def test_the_redis_password_never_shows() -> None:
    config = OutboxConfig.model_validate(
        {"url": "sqlite:///x.db", "dispatch": {"engine": "rq", "redis": "redis://:hunter2@h/0"}}
    )
    assert "hunter2" not in repr(config)


def test_a_task_with_a_bad_argument_fails_before_any_io(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    cfg = config(f"sqlite:///{tmp_path / 'o.db'}", smtp_server.port, "redis://127.0.0.1:1", "q")
    sync = SyncMailer.from_config(cfg)
    try:
        for bad in ("1", 0, True, None):
            with pytest.raises(ValueError, match="row id"):
                tasks.deliver(sync, bad)
    finally:
        sync.close()
    assert not (tmp_path / "o.db").exists()


def test_a_worker_for_another_engine_is_refused(tmp_path: Path) -> None:
    cfg = config("sqlite:///x.db", 25, "redis://127.0.0.1:1", "q")
    with pytest.raises(ConfigError, match="celery tasks need"):
        tasks.check_engine(cfg, "celery")


def test_import_mailer_imports_no_engine() -> None:
    code = (
        "import sys, mailer, mailer.django, mailer.rq, mailer.celery;"
        "print(sorted(m for m in ('celery', 'rq', 'arq', 'django_tasks') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_outbox_status_shows_the_engine_and_sweep_publishes(
    tmp_path: Path, smtp_server: SMTPTestServer, own_redis: RedisServer
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    cfg = config(url, smtp_server.port, own_redis.url, "mail", sweep_after=0.1)
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(cfg))
    own_redis.stop()

    async def go() -> None:
        async with Mailer.from_config(cfg) as mailer:
            await mailer.enqueue(message())

    run(go)
    own_redis.start()
    mailer_cli = [sys.executable, "-m", "mailer", "outbox"]
    swept = subprocess.run([*mailer_cli, "sweep", "--config", str(path)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert "1 task(s) published again" in swept.stdout
    status = subprocess.run([*mailer_cli, "status", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    engine_line = next(line for line in status.stdout.splitlines() if "rq" in line)
    cells = [c.strip() for c in engine_line.replace("│", "|").split("|") if c.strip()]
    # rows 1, published 2 (the lost one and the sweep's), then by state: 1 queued
    assert cells[:4] == ["rq", "1", "2", "1"], status.stdout


def test_a_failed_publish_is_logged_without_the_brokers_password(
    tmp_path: Path, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    from mailer.testing import closed_port

    redis = f"redis://:hunter2-secret@127.0.0.1:{closed_port()}/0"
    cfg = config(f"sqlite:///{tmp_path / 'o.db'}", smtp_server.port, redis, "mail")

    async def go() -> str:
        async with Mailer.from_config(cfg) as mailer:
            return await mailer.enqueue(message())  # stored, its task not published

    mid = run(go)
    assert "the sweep will publish it" in caplog.text
    assert mid in caplog.text
    assert "hunter2" not in caplog.text
