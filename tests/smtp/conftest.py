"""Fixtures for the SMTP provider tests: real servers on 127.0.0.1, stopped after use
(``certs`` is the session's, from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailer.testing import Certs, SMTPTestServer, TokenEndpoint

from .kit import Keys


@pytest.fixture
def smtp_server(certs: Certs) -> Iterator[Callable[..., SMTPTestServer]]:
    """A factory: ``smtp_server(tls="starttls", auth=True, ...)`` -> a started server."""
    servers: list[SMTPTestServer] = []

    def make(**kwargs: Any) -> SMTPTestServer:
        server = SMTPTestServer(certs, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def plain_server(smtp_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """Plaintext, no STARTTLS, AUTH offered (so the client must refuse to use it)."""
    return smtp_server()


@pytest.fixture
def starttls_server(smtp_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    return smtp_server(tls="starttls")


@pytest.fixture
def tls_server(smtp_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """Implicit TLS (the port-465 kind)."""
    return smtp_server(tls="implicit")


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def keys() -> Keys:
    """Fresh RSA and ed25519 DKIM keys, and their DNS records (made once: RSA is slow)."""
    return Keys()
