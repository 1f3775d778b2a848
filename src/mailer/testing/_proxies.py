"""Real proxies on 127.0.0.1, for the providers' ``proxy`` option: HTTP CONNECT and SOCKS.

Why real ones: a proxy's set-up is its own exchange before the provider's first byte (a
``CONNECT`` and its answer, a SOCKS handshake), and what a provider does when that
exchange fails or never ends decides whether it fails over or leaves the message
uncertain. httpcore once handed our commit-point trace to the ``CONNECT`` request; only a
real proxy in front of a real server shows such a thing.

* :class:`HTTPConnectProxy`: ``CONNECT`` (RFC 9110 section 9.3.6), Basic
  ``Proxy-Authorization`` when ``user`` is set.
* :class:`SOCKSProxy`: SOCKS5 (RFC 1928; RFC 1929 username/password when ``user`` is set),
  SOCKS4 and 4a.

Both record what each client asked for (``requests``) and the credentials it offered
(``auth``). ``resolve`` maps the names they are asked for to addresses, so a client can
name a test certificate's host and still reach a loopback server.

**Loopback only.** A destination is relayed only when it is, or ``resolve`` maps it to, a
loopback address; anything else is refused with the protocol's own answer, and a name is
never looked up. A kit proxy left running is never an open relay.

**Bounded.** The set-up is read with a 5 s timeout and a 64 KiB limit; the upstream
connect times out after 5 s; the relay after it is the kit's
(:meth:`~mailer.testing.ThreadedSocketServer.relay`: it ends when either side closes, the
proxy stops, or nothing moves for a minute).

**A proxy that never answers.** While ``hang`` is set, a proxy reads each request (and
records it) but never answers it and never connects anywhere: the client waits until its
own timeout, as behind a proxy whose route to the server is blackholed. :meth:`stop`
releases the held connections.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import threading

from ._sockets import ThreadedSocketServer

__all__ = ["HTTPConnectProxy", "SOCKSProxy"]

#: the set-up's own bounds: time for each read, size of an HTTP request head
_SETUP_TIMEOUT = 5.0
_MAX_HEAD = 64 * 1024
_CONNECT_TIMEOUT = 5.0


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a name: never looked up
        return False


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("the client closed the connection")
        data += chunk
    return data


def _read_until_nul(sock: socket.socket, limit: int = 255) -> bytes:
    data = b""
    while (byte := _read_exactly(sock, 1)) != b"\x00":
        data += byte
        if len(data) > limit:
            raise ValueError("a SOCKS4 field too long")
    return data


class _Proxy(ThreadedSocketServer):
    """What both proxies share: credentials, the name table, the upstream, the record."""

    #: the URL scheme a client names this proxy with (``{scheme}://127.0.0.1:{port}``)
    scheme = ""

    def __init__(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        resolve: dict[str, str] | None = None,
        hang: bool = False,
    ) -> None:
        super().__init__()
        self.user, self.password = user, password
        self.resolve = dict(resolve or {})
        self.hang = hang
        #: each destination as the client sent it: a name or an address, and the port
        self.requests: list[tuple[str, int]] = []
        #: each credential pair offered (SOCKS4 offers a user id only: the password is "")
        self.auth: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (``http://127.0.0.1:PORT``)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        user = f", user={self.user!r}" if self.user is not None else ""
        return f"{type(self).__name__}(port={self.port}{user})"  # never the password

    def on_connect(self, client: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_SETUP_TIMEOUT)
        with contextlib.suppress(OSError, ValueError):
            self.handshake(client)

    def handshake(self, client: socket.socket) -> None:
        """Read the client's request, answer it, and relay (or refuse)."""
        raise NotImplementedError

    def _open(self, host: str, port: int) -> socket.socket | None:
        """The upstream connection for ``host:port``, or None when it is refused: not a
        loopback address, nothing listening, or the proxy set to ``hang`` (which holds
        the request unanswered until the proxy stops)."""
        self.requests.append((host, port))
        if self.hang:
            self._stop.wait()
            return None
        address = self.resolve.get(host, host)
        if not _loopback(address):
            return None
        try:
            upstream = socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT)
        except OSError:
            return None
        self.keep(upstream)
        return upstream


class SOCKSProxy(_Proxy):
    """SOCKS5 (RFC 1928, RFC 1929 username/password when ``user`` is set) and SOCKS4/4a.

    ``url`` names it ``socks5h://`` (the proxy resolves); a client may equally use
    ``socks5://``, ``socks4://`` or ``socks4a://`` with the same port."""

    scheme = "socks5h"

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
        self.relay(client, upstream)

    def _socks4(self, client: socket.socket) -> None:
        command, port_hi, port_lo = _read_exactly(client, 3)
        address = _read_exactly(client, 4)
        user = _read_until_nul(client).decode()
        self.auth.append((user, ""))
        if address[:3] == b"\x00\x00\x00" and address[3]:  # SOCKS4a: a name follows
            host = _read_until_nul(client).decode()
        else:
            host = socket.inet_ntoa(address)
        if self.user is not None and user != self.user:
            client.sendall(b"\x00\x5d" + b"\x00" * 6)
            client.close()
            return
        upstream = self._open(host, port_hi * 256 + port_lo) if command == 1 else None
        client.sendall(b"\x00" + (b"\x5a" if upstream else b"\x5b") + b"\x00" * 6)
        if upstream is None:
            client.close()
            return
        self.relay(client, upstream)


class HTTPConnectProxy(_Proxy):
    """HTTP ``CONNECT`` (RFC 9110 section 9.3.6), Basic ``Proxy-Authorization`` when
    ``user`` is set (407 otherwise); any other method gets 405, a refused destination
    502."""

    scheme = "http"

    def handshake(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > _MAX_HEAD:
                return
            head += chunk
        request, *lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
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
        self.relay(client, upstream)
