"""The Celery app the chaos tests run under ``celery -A tests.tasks.celery_app worker``.

``MAILER_CONFIG``: the Mailer config; ``BROKER_URL``: the test's Redis. ``NAIVE=1`` adds
the counter-example instead: ``naive.send``, which calls ``send`` inside the task, as a
hand-written Celery mail task does.
"""

from __future__ import annotations

import os

from celery import Celery

from mailer import Message, SyncMailer

app = Celery("chaos", broker=os.environ["BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        # shorter than one slow send: Redis hands the task to another worker meanwhile
        "visibility_timeout": float(os.environ.get("VISIBILITY_TIMEOUT", "1")),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
)

if os.environ.get("NAIVE") == "1":
    naive_mailer = SyncMailer.from_config(os.environ["MAILER_CONFIG"])

    @app.task(name="naive.send")
    def send(i: int) -> None:
        message = Message(
            sender="app@example.com",
            to=[f"user{i}@example.org"],
            subject=f"Naive {i}",
            text=f"body {i}",
            message_id=f"<naive-{i}@chaos.test>",
        )
        naive_mailer.send(message)
else:
    import mailer.celery

    mailer.celery.register(app, os.environ["MAILER_CONFIG"])
