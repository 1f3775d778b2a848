"""The Celery app of benchmarks/task_queues.py: ``BROKER_URL`` and ``MAILER_CONFIG`` from
the environment, the outbox's tasks registered (``mailer.celery.register``)."""

from __future__ import annotations

import os

from celery import Celery

import mailer.celery

app = Celery("bench", broker=os.environ["BROKER_URL"])
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=4)
mailer.celery.register(app, os.environ["MAILER_CONFIG"])

if os.environ.get("CELERY_6941_WORKAROUND") == "1":
    # celery#6941: the threads pool acknowledges a finished task only when the
    # consumer's event loop next wakes (up to seconds later); with acks_late the
    # unacknowledged tasks fill the prefetch window and the worker stops fetching
    # meanwhile. A timer that wakes the loop every 0.1 s bounds the delay (the issue's
    # own workaround).
    from typing import Any

    from celery import signals

    @signals.worker_ready.connect  # type: ignore[untyped-decorator]
    def _wake(sender: Any = None, **_: Any) -> None:
        sender.timer.call_repeatedly(0.1, lambda: None)
