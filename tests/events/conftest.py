"""Fixtures for the events tests: a store URL per backend (SQLite file, a database of
the session's throwaway Postgres cluster, the session's Redis under a prefix of the
test's own), events built to order, and real SMTP servers (the fault matrix's)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.faults.conftest import http_fake, smtp  # noqa: F401 - fixtures

from mailer import DeliveryEvent


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if kind == "memory":
        return None
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'mail.db'}"
    if kind == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix={request.getfixturevalue('prefix')}"


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store other processes can share, once per backend."""
    url = store_url(request.param, request, tmp_path)
    assert url is not None
    return url


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Every backend, the in-memory one (None) included."""
    return store_url(request.param, request, tmp_path)


def event(kind: str = "delivered", **fields: Any) -> DeliveryEvent:
    fields.setdefault("provider", "primary")
    fields.setdefault("recipient", "user@example.org")
    fields.setdefault("timestamp", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    return DeliveryEvent(type=kind, **fields)  # type: ignore[arg-type]


def smtp_entry(name: str, port: int, priority: int) -> dict[str, Any]:
    return {
        "type": "smtp",
        "name": name,
        "priority": priority,
        "config": {
            "host": "127.0.0.1",
            "port": port,
            "connection_timeout": 1.0,
            "greeting_timeout": 1.0,
            "socket_timeout": 3.0,
            "name": "client.test",
        },
    }
