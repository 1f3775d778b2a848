"""One SyncMailer per configuration per process, for the web framework integrations.

Why one per process: the SMTP pool and HTTP keep-alive are only worth having when every
request in the process shares them, and a Mailer's breakers only learn from the traffic
they see. Why keyed by configuration: tests and multi-tenant setups change settings, and
a new configuration must get a new Mailer rather than the old one.

Fork safety is SyncMailer's own (a forked child never touches the parent's loop or
sockets and rebuilds its Mailer from the factory given here, instrumentation included);
this registry only renews its lock in the child, which a parent thread may have held.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._config import read_config_file
from .._log import get_logger
from .._mailer import Mailer
from .._sync import SyncMailer

__all__ = ["build", "close_all", "config_key", "discard", "read_source", "shared_mailer"]

log = get_logger("mailer.integrations")

_lock = threading.Lock()
_mailers: dict[str, SyncMailer] = {}


def read_source(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A framework setting's Mailer config as a mutable mapping: the mapping itself, or
    the TOML/JSON file it names."""
    return read_config_file(source) if isinstance(source, str | Path) else dict(source)


def build(data: Mapping[str, Any], *, opentelemetry: bool = False) -> SyncMailer:
    """A SyncMailer from a config mapping. Given as a factory, so a forked worker
    rebuilds the same Mailer (instrumented with the global OpenTelemetry providers when
    asked) with its own connections."""

    def factory() -> Mailer:
        mailer = Mailer.from_config(data)
        if opentelemetry:
            from .otel import instrument

            instrument(mailer)
        return mailer

    return SyncMailer(factory)


def config_key(*parts: Any) -> str:
    """A stable key for a configuration; hashed so the registry holds no secret twice."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shared_mailer(key: str, make: Callable[[], SyncMailer]) -> SyncMailer:
    """The process's SyncMailer for ``key``, made by ``make()`` on first use."""
    with _lock:
        mailer = _mailers.get(key)
        if mailer is None:
            mailer = _mailers[key] = make()
        return mailer


def discard(key: str) -> None:
    """Close and forget the SyncMailer for ``key``, if there is one."""
    with _lock:
        mailer = _mailers.pop(key, None)
    if mailer is not None:
        _close(mailer)


def close_all() -> None:
    """Close every shared SyncMailer (in-flight sends finish; pooled connections QUIT)."""
    with _lock:
        mailers = list(_mailers.values())
        _mailers.clear()
    for mailer in mailers:
        _close(mailer)


def _close(mailer: SyncMailer) -> None:
    try:
        mailer.close()
    except Exception as exc:  # closing is best effort: it must not mask the caller's
        log.warning("closing a shared mailer failed: %s", exc)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all)
