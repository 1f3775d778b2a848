"""Raw TCP peers for the faults no real server will act out on demand.

A server that accepts and never greets, one that says ``421`` and hangs up, a port
nobody listens on: these happen before any SMTP library is involved, so they are plain
sockets in a thread (the test's event loop stays free to run the client).
``ThreadedSocketServer`` is the base for other scripted peers (proxies, relays); its
:meth:`~ThreadedSocketServer.relay` copies bytes both ways, bounded: a relay ends when
either side closes, when the server stops, or after :data:`RELAY_IDLE` seconds without a
byte, so no peer outlives its test however the client behaves.
"""

from __future__ import annotations

import atexit
import contextlib
import select
import socket
import threading
import time

__all__ = [
    "RELAY_IDLE",
    "ScriptedServer",
    "SilentServer",
    "ThreadedSocketServer",
    "closed_port",
    "free_port",
    "release_port",
]

#: seconds a relay waits for a byte before it gives up: longer than any timeout a test or
#: benchmark means to fire (the kit's HTTP "hang" is 30 s), so only a leaked peer meets it
RELAY_IDLE = 60.0
#: how often a blocked relay looks at the server's stop flag
_TICK = 0.2


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: the sockets that hold :func:`closed_port`'s ports for the rest of the process, by
#: (host, port)
_RESERVED: dict[tuple[str, int], socket.socket] = {}


def closed_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on: a connection to it is refused at once.

    The port stays bound (never listening) by this process until it exits, so nothing
    can take it meanwhile: with a port that was only free a moment ago, a test server
    started later (aiosmtpd binds a :func:`free_port`) or another process could land on
    it, one time in thousands, and the "refused" connection would be answered.

    ``host`` is the loopback address to hold it on (``"::1"`` for IPv6, ``"127.0.0.2"``
    for a second IPv4 address): a port held on one address is not held on another.
    :meth:`SMTPTestServer.start(port) <mailer.testing.SMTPTestServer.start>` lets the
    reservation go just before it binds, for a provider that comes back where nobody
    listened.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    if not _RESERVED:
        atexit.register(_release_all)
    port = int(sock.getsockname()[1])
    _RESERVED[host, port] = sock
    return port


def release_port(port: int, host: str = "127.0.0.1") -> None:
    """Let a :func:`closed_port` reservation go, so a server can bind ``port`` on
    ``host`` now (nothing happens for a port that was not reserved there)."""
    sock = _RESERVED.pop((host, port), None)
    if sock is not None:
        sock.close()


def _release_all() -> None:
    for sock in _RESERVED.values():
        sock.close()
    _RESERVED.clear()


class ThreadedSocketServer:
    """Listens on 127.0.0.1 (a free port) and calls :meth:`on_connect` per client.

    ``accepted`` counts the connections; :meth:`stop` closes every client socket, so a
    peer that never answers does not outlive its test.
    """

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ThreadedSocketServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._clients.append(client)
            with contextlib.suppress(OSError):
                self.on_connect(client)

    def on_connect(self, client: socket.socket) -> None:
        """Act on a new client; the default says nothing (a hung server)."""

    def keep(self, sock: socket.socket) -> None:
        """Close ``sock`` (an upstream connection, say) when the server stops."""
        self._clients.append(sock)

    def stop(self) -> None:
        """Stop accepting, and close every client and kept socket (relays end with
        them); safe on a server never started."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=2)
        for client in self._clients:
            client.close()
        self._listener.close()

    def relay(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        hold: float = 0.0,
        held: threading.Event | None = None,
    ) -> None:
        """Copy bytes between ``client`` and ``upstream`` both ways, each in a thread of
        its own; ``hold`` delays the upstream's first bytes to the client by that many
        seconds (a peer slow to send its first flight, such as a TLS handshake's).
        ``held`` is set once those bytes have arrived and are being held: a test waits
        for it rather than guessing how long the client takes to get that far."""
        self.keep(upstream)
        for sock in (client, upstream):
            sock.settimeout(None)  # blocking: the pumps bound their waits themselves
        name = f"mailer-testing-relay-{self.port}"  # named: a test can find its relays
        for source, sink, wait, signal in (
            (client, upstream, 0.0, None),
            (upstream, client, hold, held),
        ):
            pump = threading.Thread(
                target=self._pump, args=(source, sink, wait, signal), name=name, daemon=True
            )
            pump.start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        hold: float,
        held: threading.Event | None = None,
    ) -> None:
        # select, not a socket timeout: the sockets stay blocking, so a send to a slow
        # reader waits for it instead of failing after a tick (stop() closes them)
        first, last = True, time.monotonic()
        with contextlib.suppress(OSError, ValueError):
            while not self._stop.is_set() and time.monotonic() - last < RELAY_IDLE:
                if not select.select([source], [], [], _TICK)[0]:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if first and hold:
                    if held is not None:
                        held.set()
                    self._stop.wait(hold)
                first, last = False, time.monotonic()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class SilentServer(ThreadedSocketServer):
    """Accepts connections and never sends anything: a hang before the greeting (or an
    implicit-TLS port as a plaintext client sees it)."""


class ScriptedServer(ThreadedSocketServer):
    """Sends ``lines`` on connect, then closes (``["421 4.3.2 too busy"]``), unless
    ``close=False``."""

    def __init__(self, lines: list[str], *, close: bool = True) -> None:
        super().__init__()
        self._payload = "".join(f"{line}\r\n" for line in lines).encode()
        self._close = close

    def on_connect(self, client: socket.socket) -> None:
        client.sendall(self._payload)
        if self._close:
            client.shutdown(socket.SHUT_RDWR)
