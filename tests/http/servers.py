"""The one loopback HTTP server kit of the HTTP tests: real sockets, so that httpx's own
exceptions (and httpcore's trace events) are what the provider sees."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

__all__ = ["HTTPTestServer", "serve"]


class HTTPTestServer:
    """A loopback HTTP/1.1 server whose behaviour each test picks.

    ``ok``: answer 200 with a JSON id; ``503``: answer 503 with a JSON error (an API
    that is down but answering); ``hang``: read the whole request, never answer;
    ``drop``: read it and hang up; ``silent``: accept TCP, never read or write (a TLS
    handshake with it never ends). ``delay`` seconds pass before each answer (a slow
    but healthy API).
    """

    def __init__(self, mode: str, delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.connections = 0
        self.requests = 0
        #: each request's body, as received
        self.bodies: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "silent":
                await asyncio.sleep(30)
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests += 1
                self.bodies.append(body)
                if self.mode == "hang":
                    await asyncio.sleep(30)
                if self.mode == "drop":
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                status, body = b"200 OK", b'{"id": "real-1"}'
                if self.mode == "503":
                    status = b"503 Service Unavailable"
                    body = b'{"name": "application_error", "message": "unavailable"}'
                writer.write(
                    b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serve(
    mode: str, tls: ssl.SSLContext | None = None, delay: float = 0.0
) -> AsyncIterator[HTTPTestServer]:
    """A started server (HTTPS with ``tls``, a server-side context)."""
    state = HTTPTestServer(mode, delay)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)
