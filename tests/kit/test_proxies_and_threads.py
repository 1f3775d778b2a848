"""The kit's proxies and its loop in a thread: the promises their docstrings make.

The proxies relay only to loopback (never an open relay), hold a request unanswered
while ``hang`` is set, and release every connection at ``stop()``; ``in_thread`` serves
a blocking client while the calling thread waits on it, and stops the server on exit.
Real sockets throughout; the clients are the stdlib's and httpx's.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import httpx
import pytest

from mailer.testing import (
    FakeResend,
    HTTPConnectProxy,
    HTTPTestServer,
    LoopThread,
    SOCKSProxy,
    ThreadedSocketServer,
    in_thread,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def connect(proxy: HTTPConnectProxy, target: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return sock


def status_line(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0]


def test_connect_relays_to_loopback_and_refuses_anything_else() -> None:
    with _EchoServer() as echo:
        proxy = HTTPConnectProxy(resolve={"api.test.example": "127.0.0.1"}).start()
        try:
            with connect(proxy, f"api.test.example:{echo.port}") as sock:
                assert status_line(sock) == b"HTTP/1.1 200 Connection established"
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"  # through the relay and back
            # an address off this machine, and a name nobody mapped: 502, never dialled
            for target in ("192.0.2.1:443", "example.com:443"):
                with connect(proxy, target) as sock:
                    assert status_line(sock) == b"HTTP/1.1 502 Bad Gateway"
        finally:
            proxy.stop()
    assert proxy.requests == [
        ("api.test.example", echo.port),
        ("192.0.2.1", 443),
        ("example.com", 443),
    ]
    assert echo.accepted == 1


def test_socks5_refuses_an_address_off_this_machine() -> None:
    proxy = SOCKSProxy().start()
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            sock.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
            assert sock.recv(2) == b"\x05\x00"
            sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("192.0.2.1") + (25).to_bytes(2))
            assert sock.recv(2) == b"\x05\x05"  # "connection refused"
    finally:
        proxy.stop()
    assert proxy.requests == [("192.0.2.1", 25)]
    assert proxy.url == f"socks5h://127.0.0.1:{proxy.port}"


def test_a_hanging_proxy_never_answers_until_it_stops() -> None:
    proxy = HTTPConnectProxy(hang=True).start()
    sock = connect(proxy, "127.0.0.1:9", timeout=0.5)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing in 0.5 s
        assert proxy.requests == [("127.0.0.1", 9)]  # read and recorded all the same
        sock.settimeout(5)
        proxy.stop()
        assert status_line(sock) in (b"", b"HTTP/1.1 502 Bad Gateway")  # released
    finally:
        sock.close()


def test_a_relay_ends_when_the_proxy_stops() -> None:
    """A connection relayed to a peer that never speaks is closed by ``stop()``: the
    relay's two threads do not outlive the proxy."""
    silent = ThreadedSocketServer().start()
    proxy = HTTPConnectProxy().start()

    def relays() -> int:
        name = f"mailer-testing-relay-{proxy.port}"
        return sum(1 for t in threading.enumerate() if t.name == name)

    try:
        sock = connect(proxy, f"127.0.0.1:{silent.port}")
        assert status_line(sock) == b"HTTP/1.1 200 Connection established"
        assert wait_until(lambda: relays() == 2, timeout=5)  # started just after the 200
        proxy.stop()
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # closed, either way
            assert sock.recv(1) == b""
        assert wait_until(lambda: relays() == 0, timeout=5)
    finally:
        sock.close()
        silent.stop()


def test_a_proxys_repr_never_shows_its_password() -> None:
    proxy = HTTPConnectProxy(user="u", password="pr0xy-secret-value")
    try:
        assert "pr0xy-secret-value" not in repr(proxy)
        assert "user='u'" in repr(proxy)
    finally:
        proxy.stop()


def test_in_thread_serves_a_blocking_client_and_stops_on_exit() -> None:
    """This thread blocks in httpx's synchronous client; the server answers from its own
    loop. On exit the server is stopped: its port refuses."""
    with in_thread(FakeResend(api_key="re_kit_key")) as api:
        reply = httpx.post(
            f"{api.base_url}/emails",
            headers={"Authorization": "Bearer re_kit_key"},
            json={"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"},
            timeout=5,
        )
        assert reply.status_code == 200 and api.accepted == 1
        port = api.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_loop_thread_runs_coroutines_and_passes_their_errors_on() -> None:
    async def fails() -> None:
        raise ValueError("from the thread's loop")

    with LoopThread(timeout=5) as runner:
        server = runner.run(HTTPTestServer("503").start())
        assert runner.run(_get(server.base_url)) == 503
        runner.run(server.stop())
        with pytest.raises(ValueError, match="thread's loop"):
            runner.run(fails())
    assert runner.loop.is_closed()


async def _get(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, timeout=5)).status_code


class _EchoServer(ThreadedSocketServer):
    """Sends back what it reads (one read), to show bytes crossed the relay."""

    def on_connect(self, client: socket.socket) -> None:
        client.settimeout(5)
        client.sendall(client.recv(64))

    def __enter__(self) -> _EchoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
