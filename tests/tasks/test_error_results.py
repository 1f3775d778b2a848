"""A Celery task's failure carries our error to the caller with its fields (issue 24):
a real worker process, a task that calls ``send`` through two providers whose server
defers the recipient, its result in Redis (pickle serializer). Before errors pickled, Celery stored
the nearest class it could rebuild, without ``errors``, ``refused`` or the message."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from celery import Celery
from tests.health.redis_kit import RedisServer

from mailer import AllProvidersFailed, RecipientsDeferred
from mailer.testing import SMTPTestServer

from .conftest import Workers, smtp_provider


def test_a_failed_send_reaches_the_caller_whole(
    tmp_path: Path, smtp_server: SMTPTestServer, own_redis: RedisServer, workers: Any
) -> None:
    smtp_server.state.fail("RCPT", "450 4.2.1 mailbox busy")
    backup = {**smtp_provider(smtp_server.port), "name": "backup"}
    config = tmp_path / "mailer.json"
    config.write_text(json.dumps({"providers": [smtp_provider(smtp_server.port), backup],
                                  "retry": {"attempts": 1}}))  # fmt: skip
    w: Workers = workers({"MAILER_CONFIG": str(config), "BROKER_URL": own_redis.url})
    w.start([
        sys.executable, "-m", "celery", "-A", "tests.tasks.celery_results_app", "worker",
        "--pool", "solo", "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])  # fmt: skip
    app = Celery("caller", broker=own_redis.url, backend=own_redis.url)
    app.conf.update(result_serializer="pickle", result_accept_content=["pickle"])
    result = app.send_task("results.send", args=(7,))
    try:
        result.get(timeout=30)
    except AllProvidersFailed as exc:
        failure = exc
    except Exception as exc:  # a timeout, another class: what the worker said
        raise AssertionError(f"{exc!r}\n{w.output()}") from exc
    else:
        raise AssertionError(f"the task did not fail\n{w.output()}")
    assert type(failure) is AllProvidersFailed
    assert not failure.possibly_delivered
    assert set(failure.errors) == {"smtp", "backup"}
    for name, error in failure.errors.items():
        assert isinstance(error, RecipientsDeferred)
        assert error.code == 450 and error.provider == name
        assert error.refused == {"user7@example.org": "450 4.2.1 mailbox busy"}
    assert failure.message is not None
    assert failure.message.message_id == "<result-7@results.test>"
    assert [a.provider for a in failure.attempts] == ["smtp", "backup"]
    assert smtp_server.received() == {}
