"""A Celery app whose task result carries our error: a task calling ``send`` that fails,
its result in Redis with the pickle serializer (tests/tasks/test_error_results.py).
``MAILER_CONFIG``: the Mailer config; ``BROKER_URL``: the test's Redis."""

from __future__ import annotations

import os

from celery import Celery

from mailer import Message, SyncMailer

app = Celery("results", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.update(
    result_serializer="pickle",
    # the tasks arrive as JSON (a worker accepting pickled tasks refuses to run as root);
    # only the results are pickled
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
mailer = SyncMailer.from_config(os.environ["MAILER_CONFIG"])


@app.task(name="results.send")  # type: ignore[untyped-decorator]
def send(i: int) -> str:
    message = Message(
        sender="app@example.com",
        to=[f"user{i}@example.org"],
        subject=f"Result {i}",
        text="body",
        message_id=f"<result-{i}@results.test>",
    )
    return mailer.send(message).provider
