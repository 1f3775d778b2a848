"""Happy Eyeballs (RFC 8305): a dead first address costs one attempt delay, not a timeout.

The client is pointed at the test certificate's host name, and the resolver (the loop's
getaddrinfo, through ``socket.getaddrinfo``) is made to answer with addresses the test
chooses: a :class:`.servers.Blackhole` first (connects hang, as on a broken IPv6 route),
the real server second. Everything stays on loopback; default timeouts are kept so the
test shows what a user with default settings gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.smtp.network import Blackhole

from mailer import Message
from mailer._errors import TransientError
from mailer.providers._smtp import SMTPProvider, _happy
from mailer.providers._smtp._happy import ATTEMPT_DELAY, interleave
from mailer.testing import TLS_NAME, SMTPTestServer, closed_port

pytestmark = pytest.mark.anyio

Resolve = Callable[[list[tuple[str, int]]], None]


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject="s", text="x")


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Resolve:
    """``resolve([(address, port), ...])``: TLS_NAME resolves to these, in this order
    (each with its own port, so one can be a blackhole and one the server)."""

    def install(addresses: list[tuple[str, int]]) -> None:
        real = socket.getaddrinfo

        def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != TLS_NAME:
                return real(host, port, *args, **kwargs)
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, p, 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, p))
                for a, p in addresses
            ]

        monkeypatch.setattr(socket, "getaddrinfo", fake)

    return install


@pytest.fixture
def blackhole() -> Iterator[Callable[[str], Blackhole]]:
    made: list[Blackhole] = []

    def make(host: str = "127.0.0.1") -> Blackhole:
        hole = Blackhole(host)
        made.append(hole)
        assert hole.hangs(), "premise: a connect to the blackhole hangs"
        return hole

    yield make
    for hole in made:
        hole.close()


def default_config(server: SMTPTestServer) -> dict[str, Any]:
    """Default timeouts (10 s connect): only what reaching the test server needs."""
    assert server.certs is not None
    return {
        "host": TLS_NAME,
        "port": server.port,
        "name": "client.test",
        "tls": {"ca_file": str(server.certs.ca_file)},
    }


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """Every socket the race creates, in order (its ``socket`` module is swapped for
    one whose ``socket`` class records; nothing else is affected)."""
    sockets: list[socket.socket] = []

    class Recording(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sockets.append(self)

    class SocketModule:
        def __getattr__(self, name: str) -> Any:
            return Recording if name == "socket" else getattr(socket, name)

    monkeypatch.setattr(_happy, "socket", SocketModule())
    return sockets


# --------------------------------------------------------------------- address order


def test_interleave_alternates_families_keeping_the_resolvers_order() -> None:
    v6 = [(socket.AF_INET6, 1, 6, "", (f"2001:db8::{i}", 25, 0, 0)) for i in (1, 2, 3)]
    v4 = [(socket.AF_INET, 1, 6, "", (f"192.0.2.{i}", 25)) for i in (1, 2)]
    got = interleave([*v6, *v4, v6[0]])  # a duplicate, dropped
    assert [info[4][0] for info in got] == [
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "2001:db8::3",
    ]
    # IPv4 first when the resolver put it first
    assert [info[0] for info in interleave([v4[0], *v6[:2]])] == [
        socket.AF_INET,
        socket.AF_INET6,
        socket.AF_INET6,
    ]


# ----------------------------------------------------------------- the whole send


async def test_a_blackholed_first_address_costs_one_attempt_delay(
    starttls_server: SMTPTestServer, resolve: Resolve, blackhole: Callable[[str], Blackhole]
) -> None:
    hole = blackhole("127.0.0.1")
    resolve([(hole.host, hole.port), ("127.0.0.1", starttls_server.port)])
    provider = SMTPProvider.from_config("p", default_config(starttls_server))
    assert provider.config.connection_timeout == 10.0  # the default, untouched
    started = time.monotonic()
    result = await provider.send(message())
    elapsed = time.monotonic() - started
    assert result.accepted == ["u@example.org"]
    assert len(starttls_server.state.messages) == 1
    # The blackhole was tried first and waited on for the attempt delay; then the
    # second address won, in well under the 10 s a one-at-a-time client would take.
    assert elapsed >= ATTEMPT_DELAY * 0.8
    assert elapsed < 3.0


@needs_ipv6
async def test_broken_ipv6_then_ipv4(
    starttls_server: SMTPTestServer, resolve: Resolve, blackhole: Callable[[str], Blackhole]
) -> None:
    """The case of Nodemailer #1743/#1791: AAAA first, its route drops packets."""
    hole = blackhole("::1")
    resolve([(hole.host, hole.port), ("127.0.0.1", starttls_server.port)])
    started = time.monotonic()
    await SMTPProvider.from_config("p", default_config(starttls_server)).send(message())
    assert time.monotonic() - started < 3.0
    assert len(starttls_server.state.messages) == 1


class _IPv6Server(SMTPTestServer):
    host = "::1"


@needs_ipv6
async def test_ipv6_first_when_it_works(
    certs: Any, resolve: Resolve, starttls_server: SMTPTestServer
) -> None:
    """``::1`` then 127.0.0.1: the IPv6 server gets the message (within the delay, so
    the IPv4 one is never even tried)."""
    v6 = _IPv6Server(certs, tls="starttls").start()
    try:
        resolve([("::1", v6.port), ("127.0.0.1", starttls_server.port)])
        await SMTPProvider.from_config("p", default_config(v6)).send(message())
        assert len(v6.state.messages) == 1
        assert starttls_server.state.messages == []
        assert starttls_server.state.connections == 0
    finally:
        v6.stop()


@needs_ipv6
async def test_refused_ipv6_falls_back_at_once(
    starttls_server: SMTPTestServer, resolve: Resolve
) -> None:
    """A refusal is an answer: the next address is tried without waiting the delay."""
    resolve([("::1", closed_port("::1")), ("127.0.0.1", starttls_server.port)])
    started = time.monotonic()
    await SMTPProvider.from_config("p", default_config(starttls_server)).send(message())
    assert time.monotonic() - started < 3.0
    assert len(starttls_server.state.messages) == 1


async def test_every_address_refused_is_a_refusal(
    starttls_server: SMTPTestServer, resolve: Resolve
) -> None:
    resolve([("127.0.0.1", closed_port()), ("127.0.0.2", closed_port("127.0.0.2"))])
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", default_config(starttls_server)).send(message())
    assert "connection refused by mail.test.example:" in str(info.value)


async def test_a_name_that_does_not_resolve(starttls_server: SMTPTestServer) -> None:
    config = {**default_config(starttls_server), "host": "no-such-host.invalid"}
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert "cannot resolve host 'no-such-host.invalid'" in str(info.value)
    assert info.value.retry_here is False


async def test_every_address_hangs_is_the_connection_timeout(
    starttls_server: SMTPTestServer, resolve: Resolve, blackhole: Callable[[str], Blackhole]
) -> None:
    holes = [blackhole("127.0.0.1"), blackhole("127.0.0.1")]
    resolve([(h.host, h.port) for h in holes])
    config = {**default_config(starttls_server), "connection_timeout": 1.0}
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert time.monotonic() - started < 3.0
    assert "timed out after 1s connecting to mail.test.example:" in str(info.value)
    assert info.value.timed_out


# ------------------------------------------------------------ the race's own sockets


async def test_the_losers_are_closed(
    starttls_server: SMTPTestServer,
    resolve: Resolve,
    blackhole: Callable[[str], Blackhole],
    made: list[socket.socket],
) -> None:
    hole = blackhole("127.0.0.1")
    resolve([(hole.host, hole.port), ("127.0.0.1", starttls_server.port)])
    sock, peer = await _happy.connect(TLS_NAME, starttls_server.port)
    try:
        assert peer == f"127.0.0.1:{starttls_server.port}"
        assert len(made) == 2  # the blackhole's attempt, then the winner
        assert made[1] is sock and sock.fileno() != -1
        assert made[0].fileno() == -1  # the loser, closed
    finally:
        sock.close()


async def test_cancelling_the_race_closes_every_attempt(
    resolve: Resolve, blackhole: Callable[[str], Blackhole], made: list[socket.socket]
) -> None:
    holes = [blackhole("127.0.0.1") for _ in range(3)]
    resolve([(h.host, h.port) for h in holes])
    task = asyncio.ensure_future(_happy.connect(TLS_NAME, 25, delay=0.05))
    for _ in range(100):  # bounded: until all three attempts are running
        if len(made) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(made) == 3
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [s.fileno() for s in made] == [-1, -1, -1]
