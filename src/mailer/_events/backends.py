"""One backend per store URL: SQLite, Postgres, Redis, or memory when there is none.

A backend implements both :class:`~mailer._events.store.EventStore` and
:class:`~mailer._events.store.SuppressionStore`, so the events and the suppression list
share one connection (pool) when they share one URL.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .._redact import register_secret
from .memory import MemoryBackend
from .store import EventStore, SuppressionStore

__all__ = ["Backend", "open_backend"]


class Backend(EventStore, SuppressionStore):
    """Both protocols (for typing)."""


def open_backend(url: str | None, *, retention: float = 30 * 86400.0) -> Backend:
    """The backend for ``url`` (checked by the config already); not opened yet. A
    password in the URL is registered as a secret, so no log line or error shows it.
    ``retention`` (seconds) is the TTL of what Redis keeps for events."""
    if url is None:
        return MemoryBackend()  # type: ignore[return-value]
    parts = urlsplit(url)
    if parts.password:
        register_secret(unquote(parts.password))
    scheme = parts.scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend, sqlite_path

        return SQLiteBackend(sqlite_path(url))  # type: ignore[return-value]
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresBackend

        return PostgresBackend(url)  # type: ignore[return-value]
    from .redis import RedisBackend

    return RedisBackend(url, ttl=retention)  # type: ignore[return-value]
