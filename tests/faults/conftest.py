"""Fixtures for the fault matrix: real servers on 127.0.0.1, stopped after each test.

The servers are the test kit's (``mailer.testing``; ``certs`` is the session's, from
tests/conftest.py); kit.py holds the load runner and the ledger check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from mailer.testing import (
    Certs,
    FakeResend,
    HTTPTestServer,
    SMTPTestServer,
    TokenEndpoint,
    in_thread,
)


@pytest.fixture
def smtp(certs: Certs) -> Iterator[Callable[..., SMTPTestServer]]:
    """A factory: ``smtp(tls=None|"starttls"|"implicit", auth=..., idle_timeout=...)``;
    ``port=`` starts it on that port (a provider that comes back where it was)."""
    started: list[SMTPTestServer] = []

    def make(port: int | None = None, **kwargs: Any) -> SMTPTestServer:
        kwargs.setdefault("auth", False)
        server = SMTPTestServer(certs, **kwargs).start(port)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
async def http_fake() -> AsyncIterator[FakeResend]:
    fake = await FakeResend().start()
    yield fake
    await fake.stop()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(["tok-1"]).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def api(certs: Certs) -> Iterator[HTTPTestServer]:
    """The kit's HTTPS API (``certs``' names) on an event loop of its own, in a thread:
    the starved-loop tests hold this test's loop, and the API must still answer on time."""
    with in_thread(HTTPTestServer(tls=certs.server_context())) as server:
        yield server
