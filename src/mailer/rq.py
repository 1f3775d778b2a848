"""RQ integration: ``mailer.rq.deliver`` is the outbox's task (docs/task-queues.md).

The config comes from ``$MAILER_CONFIG`` (or Django's ``settings.MAILER``), with
``outbox.dispatch = {engine = "rq", redis = "redis://...", queue = "mail"}``; run
``rq worker --with-scheduler mail`` (the scheduler runs the retries' ``enqueue_in``) and
``mailer.rq.sweep`` every minute (``rq-scheduler``, cron, or ``mailer outbox sweep``).
``rq`` is imported by RQ itself, never by ``import mailer``.
"""

from __future__ import annotations

from ._integrations import tasks as _tasks

__all__ = ["deliver", "sweep"]


def deliver(row: int) -> str:
    """Deliver outbox row ``row`` once: its new state, or why nothing was sent."""
    return _tasks.deliver(_tasks.mailer_for(engine="rq"), row)


def sweep() -> int:
    """Publish again the tasks that were lost; how many."""
    return _tasks.sweep(_tasks.mailer_for(engine="rq"))
