"""One backend per store URL: SQLite, Postgres, Redis, or memory when there is none.

A backend implements both :class:`~mailer._events.store.EventStore` and
:class:`~mailer._events.store.SuppressionStore`, so the events and the suppression list
share one connection (pool) when they share one URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .memory import MemoryBackend
from .store import EventStore, SuppressionStore

__all__ = ["Backend", "open_backend"]


class Backend(EventStore, SuppressionStore):
    """Both protocols (for typing)."""


def open_backend(url: str | None) -> Backend:
    """The backend for ``url`` (checked by the config already); not opened yet."""
    if url is None:
        return MemoryBackend()  # type: ignore[return-value]
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend, sqlite_path

        return SQLiteBackend(sqlite_path(url))  # type: ignore[return-value]
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresBackend

        return PostgresBackend(url)  # type: ignore[return-value]
    from .redis import RedisBackend

    return RedisBackend(url)  # type: ignore[return-value]
