"""Raw TCP peers for the faults no real server will act out on demand.

A server that accepts and never greets, one that says ``421`` and hangs up, a port
nobody listens on: these happen before any SMTP library is involved, so they are plain
sockets in a thread (the test's event loop stays free to run the client).
``ThreadedSocketServer`` is the base for other scripted peers (proxies, relays).
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["ScriptedServer", "SilentServer", "ThreadedSocketServer", "closed_port", "free_port"]


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    return free_port()


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
        self._stop.set()
        self._thread.join(timeout=2)
        for client in self._clients:
            client.close()
        self._listener.close()


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
