"""django.tasks integration: ``mailer.django.tasks.deliver`` (docs/task-queues.md).

With ``outbox.dispatch = {engine = "django"}`` in ``settings.MAILER``, the outbox
enqueues this task on the project's default task backend (Django 6's ``django.tasks``,
or the ``django-tasks`` backport on older Django), and that backend's worker delivers.
Schedule :data:`sweep` (``mailer outbox sweep`` from cron does the same).
"""

from __future__ import annotations

from .._integrations import tasks as _tasks

try:  # Django 6
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # the backport
    from django_tasks import task

__all__ = ["deliver", "sweep"]


@task()  # type: ignore[untyped-decorator,unused-ignore]
def deliver(row: int) -> str:
    """Deliver outbox row ``row`` once: its new state, or why nothing was sent."""
    return _tasks.deliver(_tasks.mailer_for(engine="django"), row)


@task()  # type: ignore[untyped-decorator,unused-ignore]
def sweep() -> int:
    """Publish again the tasks that were lost; how many."""
    return _tasks.sweep(_tasks.mailer_for(engine="django"))
