"""Fixtures for the fault matrix: real servers on 127.0.0.1, stopped after each test.

The SMTP servers come from tests/smtp/servers.py (imported as tests.smtp.servers: the
repository root is on pytest's pythonpath), extended in kit.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .kit import Certs, FaultServer, HTTPFake, TokenEndpoint, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("fault-certs")))


@pytest.fixture
def smtp(certs: Certs) -> Iterator[Callable[..., FaultServer]]:
    """A factory: ``smtp(tls=None|"starttls"|"implicit", auth=..., idle_timeout=...)``;
    ``port=`` starts it on that port (a provider that comes back where it was)."""
    started: list[FaultServer] = []

    def make(port: int | None = None, **kwargs: Any) -> FaultServer:
        kwargs.setdefault("auth", False)
        server = FaultServer(certs, **kwargs).start(port)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
async def http_fake() -> AsyncIterator[HTTPFake]:
    fake = await HTTPFake().start()
    yield fake
    await fake.stop()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(["tok-1"]).start()
    yield endpoint
    endpoint.stop()
