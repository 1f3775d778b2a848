"""Fixtures for the peer tests: real SMTP servers nobody here wrote, on 127.0.0.1.

One server process per distinct configuration, shared by the whole session (a node start
costs a few hundred ms on a loaded machine); each case keeps apart from the others on a
shared server by its ledger mark and its own addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.smtp.servers import Certs, TokenEndpoint, make_certs

from .kit import PeerServer, SinkServer, install_smtp_server, postfix_sink_reason


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


@pytest.fixture(scope="session")
def peer(
    smtp_server_version: str, peer_certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PeerServer]]:
    """``peer(**options)`` -> a started smtp-server with those options (see
    smtp_server.js), the same process for the same options all session long."""
    servers: dict[str, PeerServer] = {}

    def get(**options: Any) -> PeerServer:
        key = repr(sorted(options.items()))
        if key not in servers:
            directory = tmp_path_factory.mktemp("smtp-server")
            try:
                servers[key] = PeerServer(directory, peer_certs, options).start()
            except RuntimeError as exc:
                pytest.fail(str(exc))
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SinkServer]]:
    """``sink(pipelining=..., quit_after_dot=...)`` -> Postfix's smtp-sink, one process
    per option set; the tests skip when it cannot run here."""
    reason = postfix_sink_reason()
    if reason is not None:
        pytest.skip(reason)
    servers: dict[tuple[bool, bool], SinkServer] = {}

    def get(pipelining: bool = True, quit_after_dot: bool = False) -> SinkServer:
        key = (pipelining, quit_after_dot)
        if key not in servers:
            directory = tmp_path_factory.mktemp("smtp-sink")
            try:
                servers[key] = SinkServer(directory, pipelining, quit_after_dot).start()
            except RuntimeError as exc:
                pytest.fail(str(exc))
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint().start()
    yield endpoint
    endpoint.stop()
