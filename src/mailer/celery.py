"""Celery integration: the outbox's tasks on the app's Celery (docs/task-queues.md).

::

    # proj/celery.py
    app = Celery("proj", broker="redis://...")
    mailer.celery.register(app, "mailer.toml")   # outbox.dispatch = {engine = "celery", ...}

then ``celery -A proj worker`` delivers, and ``celery -A proj beat`` runs the sweep.
``celery`` is imported by the app, never by ``import mailer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._integrations import tasks as _tasks
from ._integrations._process import read_source
from ._outbox.config import DispatchConfig
from ._outbox.publishers import CELERY_TASK, use_celery_app

__all__ = ["SWEEP_TASK", "TASK", "Registered", "register"]

#: the delivery task's name; its one argument is the outbox row id (an int)
TASK = CELERY_TASK
#: the periodic sweep's name; no argument
SWEEP_TASK = "mailer.sweep"


@dataclass(frozen=True, slots=True)
class Registered:
    """The tasks :func:`register` added, to route or call them."""

    deliver: Any
    sweep: Any


def register(app: Any, config: Mapping[str, Any] | str | Path) -> Registered:
    """Add ``mailer.deliver`` and ``mailer.sweep`` to ``app`` and the sweep to its beat
    schedule (every ``dispatch.sweep_every``). The config (a mapping or a TOML/JSON file)
    is checked now and its Mailer built on first use, in each worker process.

    ``mailer.deliver`` is ``acks_late``: a task whose worker died is run again, and the
    outbox row's state, not the broker, decides whether it sends.
    """
    data = read_source(config)
    data.pop("django", None)
    _tasks.check_engine(data, "celery")
    every = DispatchConfig.model_validate(data["outbox"]["dispatch"]).sweep_every
    sync = _tasks.mailer_for(data, "celery")
    use_celery_app(app)

    @app.task(name=TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def deliver(row: int) -> str:
        return _tasks.deliver(sync, row)

    @app.task(name=SWEEP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def sweep() -> int:
        return _tasks.sweep(sync)

    schedule = dict(app.conf.beat_schedule or {})
    schedule[SWEEP_TASK] = {"task": SWEEP_TASK, "schedule": every}
    app.conf.beat_schedule = schedule
    return Registered(deliver=deliver, sweep=sweep)
