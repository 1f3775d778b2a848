"""What every task engine's integration shares (docs/task-queues.md): where the config
comes from, the process's Mailer, and the blocking task bodies.

A Celery, RQ or django.tasks task is a blocking function; each runs the outbox's
asynchronous task body on the process's SyncMailer, whose one loop thread keeps the SMTP
pool and the store open between tasks, and which a forked worker (Celery prefork, RQ's
work horse) rebuilds for itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._log import get_logger
from .._outbox import dispatch
from .._sync import SyncMailer
from ._process import build, config_key, read_source, shared_mailer

__all__ = [
    "ENV",
    "check_engine",
    "config_source",
    "deliver",
    "mailer_for",
    "publish_after_commit",
    "row_id",
    "sweep",
]

log = get_logger("mailer.tasks")

#: the environment variable naming the config file (as for the ``mailer`` command)
ENV = "MAILER_CONFIG"

Source = Mapping[str, Any] | str | Path


def config_source() -> Source:
    """``$MAILER_CONFIG`` (a TOML/JSON file), else Django's ``settings.MAILER``."""
    path = os.environ.get(ENV)
    if path:
        return Path(path)
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        from django.conf import settings

        source = getattr(settings, "MAILER", None)
        if isinstance(source, Mapping | str | Path):
            return source
    raise ConfigError(
        f"no Mailer config for the task: set {ENV} to the config file, or settings.MAILER "
        "in a Django project"
    )


def mailer_for(source: Source | None = None, engine: str | None = None) -> SyncMailer:
    """The process's SyncMailer for ``source`` (default: :func:`config_source`), built
    once; its outbox must dispatch to ``engine`` when one is named."""
    source = config_source() if source is None else source
    key = config_key("tasks", source)

    def make() -> SyncMailer:
        data = read_source(source)
        data.pop("django", None)  # the Django backend's own options
        check_engine(data, engine)
        return build(data)

    return shared_mailer(key, make)


def check_engine(data: Mapping[str, Any], engine: str | None) -> None:
    """A config whose outbox dispatches elsewhere would publish retries to another
    engine: refuse it when the worker starts, not at the first retry."""
    outbox = data.get("outbox")
    found = outbox.get("dispatch") if isinstance(outbox, Mapping) else None
    if engine is not None and (not isinstance(found, Mapping) or found.get("engine") != engine):
        raise ConfigError(
            f'the {engine} tasks need outbox.dispatch = {{engine = "{engine}", ...}} in the '
            "Mailer config (docs/task-queues.md)"
        )


def row_id(row: Any) -> int:
    if isinstance(row, bool) or not isinstance(row, int) or row < 1:
        raise ValueError(f"an outbox task's argument is a row id (a positive int), got {row!r}")
    return row


def deliver(sync: SyncMailer, row: Any) -> str:
    """Deliver outbox row ``row`` once; its new state, or why nothing was sent."""
    row = row_id(row)
    return sync._call(lambda mailer: mailer.outbox.deliver_row(row), "the outbox task")


def sweep(sync: SyncMailer) -> int:
    """Publish again the tasks that were lost; how many."""
    return sync._call(lambda mailer: mailer.outbox.sweep(), "the outbox sweep")


def publish_after_commit(sync: SyncMailer, message_id: str) -> None:
    """Publish a row written in the app's transaction, once it committed (never
    raises: the sweep publishes what this could not)."""
    try:
        sync._call(lambda m: dispatch.publish(m.outbox, message_id, 0.0), "publishing")
    except Exception as exc:
        log.warning("outbox %s: task not published after commit (%s)", message_id, exc)
