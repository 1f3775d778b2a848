"""Fixtures for the peer tests: real SMTP servers nobody here wrote, on 127.0.0.1.

One server process per distinct configuration, shared by the whole session (a node start
costs a few hundred ms on a loaded machine); each case keeps apart from the others on a
shared server by its ledger mark and its own addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

from mailer.testing import Certs, TokenEndpoint, make_certs

from .kit import PeerServer, SinkServer, install_smtp_server, postfix_sink_reason


class _Server(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


@pytest.fixture(scope="session")
def smtp_server_version() -> str:
    """smtp-server's version, installed on first use; the tests skip if that fails."""
    try:
        return install_smtp_server()
    except RuntimeError as exc:
        pytest.skip(f"Nodemailer's smtp-server is not available: {exc}")


@pytest.fixture(scope="session")
def peer_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("peer-certs")))


class Servers(Generic[S]):
    """``servers(**options)`` -> the started server for those options: one process per
    distinct option set for the whole session, all stopped at its end."""

    def __init__(self, factory: pytest.TempPathFactory, name: str, make: Callable[..., S]) -> None:
        self._factory, self._name, self._make = factory, name, make
        self._started: dict[str, S] = {}

    def __call__(self, **options: Any) -> S:
        key = repr(sorted(options.items()))
        if key not in self._started:
            directory = self._factory.mktemp(self._name)
            try:
                self._started[key] = self._make(directory, **options).start()
            except RuntimeError as exc:
                pytest.fail(str(exc))
        return self._started[key]

    def stop(self) -> None:
        for server in self._started.values():
            server.stop()


@pytest.fixture(scope="session")
def peer(
    smtp_server_version: str, peer_certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers[PeerServer]]:
    """``peer(**options)`` -> Nodemailer's smtp-server with those options (see
    smtp_server.js)."""
    servers = Servers(tmp_path_factory, "smtp-server", lambda d, **o: PeerServer(d, peer_certs, o))
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers[SinkServer]]:
    """``sink(pipelining=..., quit_after_dot=...)`` -> Postfix's smtp-sink; the tests
    skip when it cannot run here."""
    reason = postfix_sink_reason()
    if reason is not None:
        pytest.skip(reason)
    servers = Servers(tmp_path_factory, "smtp-sink", SinkServer)
    yield servers
    servers.stop()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint().start()
    yield endpoint
    endpoint.stop()
