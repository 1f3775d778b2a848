"""The ASGI receiver: ``POST /{provider name}`` (under whatever prefix it is mounted at),
and, when the Mailer has an ``unsubscribe`` config, ``GET``/``POST /u/{token}``: the
one-click endpoint of ``mailer.unsubscribe.asgi_app``, the same answers.

The body is read chunk by chunk and the request answered 413 as soon as it passes
:data:`MAX_BODY`, so an over-long post is never held whole in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from .._mailer import Mailer
from .._unsubscribe.asgi import asgi_app as unsubscribe_app
from .._unsubscribe.endpoint import UnsubscribeEndpoint
from .handler import MAX_BODY, Reply, WebhookHandler, serves_unsubscribe, too_large

__all__ = ["ASGIApp", "asgi_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_app(
    mailer: Mailer, *, handler: WebhookHandler | None = None, close: bool = False
) -> ASGIApp:
    """An ASGI app answering the ESPs' webhook posts for ``mailer``'s providers, and
    ``.../u/{token}`` (one-click unsubscribe) when ``mailer`` has an ``unsubscribe``
    config; then a provider named ``u`` with a webhook is a ConfigError.

    ``handler`` is one made beforehand (tests reach its parsers through it); ``close``
    closes the Mailer at the server's lifespan shutdown (``mailer webhooks serve``: the
    app owns it there).
    """
    webhooks = handler or WebhookHandler(mailer)
    unsubscribe = unsubscribe_app(mailer) if serves_unsubscribe(webhooks) else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, mailer if close else None)
            return
        if scope["type"] != "http":
            return
        if unsubscribe is not None and UnsubscribeEndpoint.token_of(scope["path"]) is not None:
            await unsubscribe(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        name = scope["path"].rstrip("/").rpartition("/")[2]
        routed = webhooks.route(scope["method"], name, _length(headers))
        if isinstance(routed, Reply):
            await _answer(send, routed)
            return
        body = await _read(receive)
        if body is None:
            await _answer(send, too_large())
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        reply = await webhooks.process(routed, headers, body, query, scope["method"])
        await _answer(send, reply)

    return app


def _length(headers: dict[str, str]) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _read(receive: Receive) -> bytes | None:
    """The whole body, or None once it passes MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, reply: Reply) -> None:
    body = reply.json()
    headers = [(k.encode(), v.encode()) for k, v in reply.headers]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send, owned: Mailer | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if owned is not None:
                await owned.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
