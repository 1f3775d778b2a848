"""A scripted loopback HTTP/1.1 server: the stand-in for an ESP's API in tests.

Why real sockets rather than a mocked transport: the faults that matter for "sent, failed
or possibly delivered" are transport faults (a connection that drops after the request
went out, a reply that never comes), and only a real socket makes httpx raise its own
exceptions for them. Dependency-free (asyncio streams), so the demo runs on it too.

Each request takes the next *mode* from ``script`` (then ``mode``):

* ``ok``: the responder answers (by default 200 ``{"id": "real-1"}``);
* a status (``503``, ``500``...): that status with :meth:`HTTPTestServer.error_body`;
  ``429:SECONDS`` adds ``Retry-After``;
* ``hang-before-body``: read the head, never the body, never answer;
* ``hang`` / ``drop``: read the whole request, then never answer / hang up;
* ``delay:SECONDS``: a slow but healthy API (then as ``ok``);
* ``accept-STATUS`` / ``accept-hang`` / ``accept-drop``: the responder *accepts* the
  request (it counts as received), then the answer is an error, or never comes.

``silent`` (as ``mode``) accepts TCP and never reads or writes: a TLS handshake with it
never ends. Every request read is kept in ``log``; ``requests`` and ``connections``
count them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HTTPRequest", "HTTPTestServer", "Reply", "read_request", "serve"]

_MAX_BODY = 20 * 1024 * 1024
_IDLE_TIMEOUT = 30.0
_LONG = 30.0  # a "hang": longer than any client timeout a test sets
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class HTTPRequest:
    """One request as the server read it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """An answer: ``payload`` is sent as JSON. A ``final`` reply (a replay of an earlier
    answer, a refused credential) is sent even under an ``accept-*`` fault, since the
    server accepted nothing new that the fault could lose the answer to."""

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    final: bool = False


Responder = Callable[[HTTPRequest], Reply]


def _default_responder(request: HTTPRequest) -> Reply:
    return Reply(200, {"id": "real-1"})


async def read_request(reader: asyncio.StreamReader) -> HTTPRequest | None:
    """One HTTP/1.1 request (Content-Length bodies only); None when the client left."""
    head = await _read_head(reader)
    if head is None:
        return None
    method, target, headers = head
    return HTTPRequest(method, target, headers, await _read_body(reader, headers))


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("bad request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for _ in range(200):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ValueError("too many headers")
    return method.upper(), target, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = int(headers.get("content-length", "0") or 0)
    if length < 0 or length > _MAX_BODY:
        raise ValueError("bad content length")
    return await reader.readexactly(length) if length else b""


class HTTPTestServer:
    """A loopback HTTP/1.1 server (keep-alive) whose faults each request picks.

    ``respond`` answers the requests that get through (``ok`` and ``accept-*``);
    subclasses override :meth:`respond` and :meth:`error_body` instead to stand in for a
    particular API. ``delay`` seconds pass before every answer. ``tls`` is a server-side
    SSL context (HTTPS). ``log`` keeps the first ``keep`` requests (a load test sends
    many more); ``port`` binds a given port (0: a free one).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        mode: str = "ok",
        *,
        delay: float = 0.0,
        script: list[str] | None = None,
        respond: Responder | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
        keep: int = 10_000,
        backlog: int = 100,
    ) -> None:
        self.mode = mode
        self.delay = delay
        self.script: deque[str] = deque(script or ())
        self.log: list[HTTPRequest] = []
        self.requests = 0
        self.connections = 0
        self.port = port
        self._respond = respond or _default_responder
        self._tls = tls
        self._keep = keep
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> HTTPTestServer:
        """Listen (on a free port the first time, on the same port after a stop)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle,
                self.host,
                self.port,
                ssl=self._tls,
                reuse_address=True,
                backlog=self._backlog,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and cut every connection (a hanging answer included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)

    async def __aenter__(self) -> HTTPTestServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def respond(self, request: HTTPRequest) -> Reply:
        """The answer to a request that got through the faults."""
        return self._respond(request)

    def error_body(self, status: int) -> Any:
        """The JSON body of an injected error status."""
        return {"name": "application_error", "message": "unavailable"}

    def next_mode(self) -> str:
        return self.script.popleft() if self.script else self.mode

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.mode == "silent":
                await asyncio.sleep(_LONG)
                return
            while await self._one(reader, writer):
                pass
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass  # the client left or sent garbage
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should end."""
        head = await asyncio.wait_for(_read_head(reader), _IDLE_TIMEOUT)
        if head is None:
            return False
        mode = self.next_mode()
        if mode == "hang-before-body":
            await asyncio.sleep(_LONG)
            return False
        method, path, headers = head
        request = HTTPRequest(method, path, headers, await _read_body(reader, headers))
        self.requests += 1
        if len(self.log) < self._keep:
            self.log.append(request)
        if mode.startswith("delay:"):
            await asyncio.sleep(float(mode.partition(":")[2]))
            mode = "ok"
        if mode == "hang":
            await asyncio.sleep(_LONG)
            return False
        if mode == "drop":
            return False
        if self.delay:
            await asyncio.sleep(self.delay)
        if mode == "ok" or mode.startswith("accept-"):
            reply = self.respond(request)
            after = mode.removeprefix("accept-") if mode != "ok" and not reply.final else ""
            if after == "hang":
                await asyncio.sleep(_LONG)
                return False
            if after == "drop":
                return False
            if after:
                reply = Reply(int(after), self.error_body(int(after)))
        else:
            status, _, retry = mode.partition(":")
            extra = {"Retry-After": retry or "1"} if status == "429" else {}
            reply = Reply(int(status), self.error_body(int(status)), extra)
        await self._write(writer, reply)
        return headers.get("connection", "").lower() != "close"

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, reply: Reply) -> None:
        data = json.dumps(reply.payload).encode()
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        await writer.drain()


@contextlib.asynccontextmanager
async def serve(
    mode: str = "ok",
    tls: ssl.SSLContext | None = None,
    delay: float = 0.0,
    **options: Any,
) -> AsyncIterator[HTTPTestServer]:
    """A started :class:`HTTPTestServer`, stopped on exit (HTTPS with ``tls``)."""
    server = await HTTPTestServer(mode, delay=delay, tls=tls, **options).start()
    try:
        yield server
    finally:
        await server.stop()
