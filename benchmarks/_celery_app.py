"""The Celery app of benchmarks/task_queues.py: ``BROKER_URL`` and ``MAILER_CONFIG`` from
the environment, the outbox's tasks registered (``mailer.celery.register``)."""

from __future__ import annotations

import os

from celery import Celery

import mailer.celery

app = Celery("bench", broker=os.environ["BROKER_URL"])
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=4)
mailer.celery.register(app, os.environ["MAILER_CONFIG"])
