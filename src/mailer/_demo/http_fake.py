"""A fake of the Resend email API on asyncio streams: the demo's HTTP provider.

Why a fake of a real API rather than a made-up one: the demo then drives the library's
real Resend adapter (pointed here through ``base_url``), so what you watch is the code
path production uses. It speaks HTTP/1.1 with keep-alive, which is all httpx needs.

Like Resend, it honours ``Idempotency-Key``: a repeated key gets the first answer back
and delivers nothing new, which is what makes retrying an uncertain send safe. It counts
deliveries by Message-ID (from the JSON ``headers``, else the idempotency key), the same
ground truth the SMTP sink keeps.

``mode`` scripts its health: "ok", "throttle" (429 with Retry-After) or "down" (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FakeResendServer"]

_MAX_BODY = 20 * 1024 * 1024
_IDLE_TIMEOUT = 30.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

Mode = Literal["ok", "throttle", "down"]


@dataclass(eq=False)
class FakeResendServer:
    """Resend's ``POST /emails`` on ``host``; ``base_url`` is what the adapter needs."""

    api_key: str = "re_demo_key"
    host: str = "127.0.0.1"
    port: int = 0
    mode: Mode = "ok"
    retry_after: float = 1.0
    received: Counter[str] = field(default_factory=Counter)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    keep: int = 10_000
    requests: int = 0
    _idempotent: dict[str, str] = field(default_factory=dict, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        return sum(self.received.values())

    @property
    def duplicates(self) -> dict[str, int]:
        return {mid: n for mid, n in self.received.items() if n > 1}

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def __aenter__(self) -> FakeResendServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await asyncio.wait_for(_read_request(reader), _IDLE_TIMEOUT)
                if request is None:
                    return
                method, path, headers, body = request
                status, extra, payload = self._respond(method, path, headers, body)
                data = json.dumps(payload).encode()
                head = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(data)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def _respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        self.requests += 1
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _error(401, "validation_error", "API key is invalid")
        if self.mode == "down":
            return 503, {}, _error(503, "internal_server_error", "Service unavailable")
        if self.mode == "throttle":
            retry = f"{self.retry_after:g}"
            return 429, {"Retry-After": retry}, _error(429, "rate_limit_exceeded", "Too many")
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and route in ("/domains", "/api-keys", ""):
            return 200, {}, {"data": []}  # what an adapter's verify() may probe
        if route != "/emails":
            return 404, {}, _error(404, "not_found", "The requested endpoint does not exist")
        if method != "POST":
            return 405, {}, _error(405, "method_not_allowed", "Method not allowed")
        try:
            email = json.loads(body)
        except ValueError:
            return 400, {}, _error(400, "validation_error", "Body is not JSON")
        if not isinstance(email, dict):
            return 422, {}, _error(422, "validation_error", "Body must be an object")
        missing = [k for k in ("from", "to", "subject") if not email.get(k)]
        if missing:
            return 422, {}, _error(422, "validation_error", f"Missing `{missing[0]}` field")
        key = headers.get("idempotency-key")
        if key and key in self._idempotent:
            return 200, {}, {"id": self._idempotent[key]}  # a replay: nothing new is sent
        email_id = secrets.token_hex(16)
        if key:
            self._idempotent[key] = email_id
        message_id = _message_id(email) or key or email_id
        self.received[message_id] += 1
        if len(self.payloads) < self.keep:
            self.payloads.append(email)
        return 200, {}, {"id": email_id}


def _error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


def _message_id(email: dict[str, Any]) -> str | None:
    extra = email.get("headers")
    if isinstance(extra, dict):
        for name, value in extra.items():
            if str(name).lower() == "message-id" and isinstance(value, str):
                return " ".join(value.split())
    return None


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request (Content-Length bodies only); None when the client left."""
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
    length = int(headers.get("content-length", "0") or 0)
    if length < 0 or length > _MAX_BODY:
        raise ValueError("bad content length")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target, headers, body
