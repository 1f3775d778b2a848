"""``mailer worker``'s closing line counts events as events (issue 21, item 10): a message
put back for a retry is "re-queued", and what is still queued is read from the outbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailer._cli.outbox import worker_summary
from mailer.testing import SMTPTestServer

from .workers_kit import enqueue, start_worker, states, stop_worker, wait_for, write_config


def test_the_summary_names_retries_and_the_backlog() -> None:
    assert worker_summary({"queued": 4, "sent": 5}, 0) == (
        "5 sent, 4 re-queued for a retry; 0 queued now"
    )
    assert worker_summary({}, 2) == "nothing sent; 2 queued now"


def test_a_worker_that_retried_reports_nothing_left_queued(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    server = smtp()
    server.state.fail("DATA_END", "451 4.3.0 try again", times=2)
    config, url = write_config(tmp_path, server.port, f"sqlite:///{tmp_path / 'o.db'}")
    ids = enqueue(config, 3)
    worker = start_worker(config)
    try:
        settled = wait_for(lambda: set(states(url).values()) == {"sent"}, timeout=60)
    finally:
        code, log = stop_worker(worker)
    assert settled and code == 0, log[-2000:]
    assert len(ids) == 3
    assert "outbox worker stopped: 3 sent, 2 re-queued for a retry; 0 queued now" in log, log
