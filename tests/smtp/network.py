"""Relays on 127.0.0.1 that only the library's own tests need: a STARTTLS-stripping man
in the middle, a server that hangs or comes back, a blackholed route. Built on the test
kit's :class:`mailer.testing.ThreadedSocketServer`; the servers themselves (SMTP, HTTP,
token endpoint) and the proxies (:class:`mailer.testing.HTTPConnectProxy`,
:class:`mailer.testing.SOCKSProxy`) are the kit's.

* :class:`StripTLSProxy`: removes STARTTLS from the EHLO reply (the downgrade attack).
* :class:`SwitchServer`: hangs, or relays to a real server, as the test flips it.
* :class:`Blackhole`: a loopback address whose connection attempts hang (SYNs dropped),
  as a broken IPv6 route does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from mailer.testing import ThreadedSocketServer

__all__ = [
    "Blackhole",
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
        self.relay(client, socket.create_connection(self.target, timeout=5))


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
