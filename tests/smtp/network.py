"""Relays on 127.0.0.1 that only the SMTP provider's own tests need: proxies, a
STARTTLS-stripping man in the middle, a server that hangs or comes back, a blackholed
route. Built on the test kit's :class:`mailer.testing.ThreadedSocketServer`; the servers
themselves (SMTP, HTTP, token endpoint) are the kit's.

* :class:`SOCKSProxy` (SOCKS4, 4a and 5, optional username/password) and
  :class:`HTTPConnectProxy` (optional Basic auth): real proxies that relay to loopback
  and record what each client asked for.
* :class:`StripTLSProxy`: removes STARTTLS from the EHLO reply (the downgrade attack).
* :class:`SwitchServer`: hangs, or relays to a real server, as the test flips it.
* :class:`Blackhole`: a loopback address whose connection attempts hang (SYNs dropped),
  as a broken IPv6 route does.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from mailer.testing import ThreadedSocketServer

__all__ = [
    "Blackhole",
    "HTTPConnectProxy",
    "SOCKSProxy",
    "StripTLSProxy",
    "SwitchServer",
    "running",
]


class StripTLSProxy(ThreadedSocketServer):
    """A man in the middle on 127.0.0.1 that removes STARTTLS from the EHLO reply.

    Everything is relayed both ways, except that ``250-STARTTLS``/``250 STARTTLS`` lines
    never reach the client (the multi-line reply is re-terminated), the downgrade attack
    that makes an opportunistic client send in plaintext. ``seen_by_mitm`` keeps what
    the client sent, as the attacker would read it.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self._upstream_port = upstream_port
        self.seen_by_mitm = bytearray()
        self._lock = threading.Lock()

    def on_connect(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port), timeout=5)
        self.keep(upstream)
        for target in (self._to_server, self._to_client):
            threading.Thread(target=target, args=(client, upstream), daemon=True).start()

    def _to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    self.seen_by_mitm += data
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _to_client(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer, held = b"", []
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\r\n")
                out = []
                for line in lines:
                    if line[:4] == b"250-":
                        held.append(line)  # a multi-line reply: wait for its last line
                        continue
                    if held or line[:3] == b"250":
                        reply = [x for x in [*held, line] if x[4:].upper() != b"STARTTLS"]
                        held = []
                        if not reply:
                            continue
                        reply = [b"250-" + x[4:] for x in reply[:-1]] + [b"250 " + reply[-1][4:]]
                        out += reply
                    else:
                        out.append(line)
                if out:
                    client.sendall(b"".join(x + b"\r\n" for x in out))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


class SwitchServer(ThreadedSocketServer):
    """A port whose server can hang or come back: while ``hung``, it accepts connections
    and never says a word (as :class:`SilentServer`); otherwise it relays each new
    connection to ``target`` (a real server). ``connections`` records (time.time(),
    hung) for each connection, so tests can tell the probes from the sends."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target
        self.hung = True
        self.connections: list[tuple[float, bool]] = []

    def on_connect(self, client: socket.socket) -> None:
        hung = self.hung
        self.connections.append((time.time(), hung))
        if hung:
            return
        upstream = socket.create_connection(self.target, timeout=5)
        self.keep(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(None)
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class _Proxy(ThreadedSocketServer):
    """What both proxies share: credentials, a name table, the relay, the record.

    ``resolve`` maps host names the proxy is asked for (socks5h, socks4a, HTTP) to
    loopback addresses, so a client can name the test certificate's host and stay on
    127.0.0.1. ``requests`` records each destination as the client sent it (a name or
    an address), ``auth`` each credential pair offered.
    """

    def __init__(
        self, *, user: str | None = None, password: str | None = None,
        resolve: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.user, self.password = user, password
        self.resolve = dict(resolve or {})
        self.requests: list[tuple[str, int]] = []
        self.auth: list[tuple[str, str]] = []

    def on_connect(self, client: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        with contextlib.suppress(OSError, ValueError):
            self.handshake(client)

    def handshake(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _open(self, host: str, port: int) -> socket.socket | None:
        self.requests.append((host, port))
        try:
            upstream = socket.create_connection((self.resolve.get(host, host), port), timeout=5)
        except OSError:
            return None
        self.keep(upstream)
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("closed")
        data += chunk
    return data


class SOCKSProxy(_Proxy):
    """SOCKS5 (RFC 1928, RFC 1929 username/password when ``user`` is set) and SOCKS4/4a."""

    def handshake(self, client: socket.socket) -> None:
        version = _read_exactly(client, 1)[0]
        if version == 5:
            self._socks5(client)
        elif version == 4:
            self._socks4(client)
        else:
            client.close()

    def _socks5(self, client: socket.socket) -> None:
        methods = _read_exactly(client, _read_exactly(client, 1)[0])
        wanted = 2 if self.user is not None else 0
        if wanted not in methods:
            client.sendall(b"\x05\xff")
            client.close()
            return
        client.sendall(bytes([5, wanted]))
        if wanted == 2:
            _read_exactly(client, 1)  # sub-negotiation version 1
            user = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
            password = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
            self.auth.append((user, password))
            ok = (user, password) == (self.user, self.password)
            client.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                client.close()
                return
        _, command, _, kind = _read_exactly(client, 4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, _read_exactly(client, 4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, _read_exactly(client, 16))
        else:
            host = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
        port = int.from_bytes(_read_exactly(client, 2), "big")
        upstream = self._open(host, port) if command == 1 else None
        reply = 0 if upstream is not None else (5 if command == 1 else 7)
        client.sendall(bytes([5, reply, 0, 1, 0, 0, 0, 0, 0, 0]))
        if upstream is None:
            client.close()
            return
        self._relay(client, upstream)

    def _socks4(self, client: socket.socket) -> None:
        command, port_hi, port_lo = _read_exactly(client, 3)
        address = _read_exactly(client, 4)
        user = b""
        while (byte := _read_exactly(client, 1)) != b"\x00":
            user += byte
        self.auth.append((user.decode(), ""))
        if address[:3] == b"\x00\x00\x00" and address[3]:  # SOCKS4a: a name follows
            name = b""
            while (byte := _read_exactly(client, 1)) != b"\x00":
                name += byte
            host = name.decode()
        else:
            host = socket.inet_ntoa(address)
        if self.user is not None and user.decode() != self.user:
            client.sendall(b"\x00\x5d" + b"\x00" * 6)
            client.close()
            return
        upstream = self._open(host, port_hi * 256 + port_lo) if command == 1 else None
        client.sendall(b"\x00" + (b"\x5a" if upstream else b"\x5b") + b"\x00" * 6)
        if upstream is None:
            client.close()
            return
        self._relay(client, upstream)


class HTTPConnectProxy(_Proxy):
    """HTTP CONNECT (RFC 9110 section 9.3.6), Basic ``Proxy-Authorization`` when ``user``
    is set (407 otherwise); anything but CONNECT gets 405."""

    def handshake(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request, *lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        method, target, _ = request.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        if self.user is not None:
            given = headers.get("proxy-authorization", "")
            if given.startswith("Basic "):
                user, _, password = base64.b64decode(given[6:]).decode().partition(":")
                self.auth.append((user, password))
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if given != f"Basic {expected}":
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n\r\n'
                )
                client.close()
                return
        host, _, port = target.rpartition(":")
        upstream = self._open(host.strip("[]"), int(port))
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._relay(client, upstream)


class Blackhole:
    """A loopback address and port where a TCP connect hangs, as on a broken route.

    A listener with a backlog of 0 whose queue is filled and never accepted: Linux
    then drops further SYNs, so a connect neither succeeds nor fails until its timeout,
    which is what a blackholed IPv6 route does to a client.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(family, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, self.port))
            self._fillers.append(filler)

    def hangs(self, timeout: float = 0.3) -> bool:
        """Whether a connect to it is still pending after ``timeout`` (the premise)."""
        family = self._listener.family
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            try:
                probe.connect((self.host, self.port))
            except TimeoutError:
                return True
            except OSError:
                return False
            return False

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    """Start servers and stop them whatever happens."""
    started = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            server.stop()
