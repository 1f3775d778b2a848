"""The ASGI face of :class:`.endpoint.UnsubscribeEndpoint` (``mailer.unsubscribe``).

The standalone app, for a service that serves only the unsubscribes; the webhook app
(``mailer.webhooks.asgi_app``) delegates ``.../u/{token}`` to it when the Mailer has an
``unsubscribe`` config (``UnsubscribeEndpoint`` is server-agnostic). ``suppress`` is the
one call that stores an unsubscribe, by default on the Mailer's suppression list
(:func:`default_suppress`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .endpoint import MAX_BODY, Answer, Suppress, UnsubscribeEndpoint
from .headers import LIST_REASON
from .token import Claim

if TYPE_CHECKING:
    from .._mailer import Mailer

__all__ = ["ASGIApp", "asgi_app", "default_suppress"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def default_suppress(mailer: Mailer) -> Suppress:
    """The Mailer's suppression list, the entry scoped to the claim's list (its reason
    ``unsubscribed:list=NAME``: the Mailer's check stops only that list's mail)."""

    async def suppress(claim: Claim) -> None:
        await mailer.suppression.add(claim.recipient, reason=f"{LIST_REASON}{claim.list}")

    return suppress


def asgi_app(mailer: Mailer, *, suppress: Suppress | None = None) -> ASGIApp:
    """An ASGI app answering ``GET``/``POST`` on ``{prefix}/u/{token}`` for ``mailer``."""
    if mailer.unsubscribe is None:
        raise ConfigError("the Mailer has no unsubscribe config (base_url and key)")
    endpoint = UnsubscribeEndpoint(mailer.unsubscribe, suppress or default_suppress(mailer))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not await _drain(receive):
            await _answer(send, Answer(413, "a one-click request has a short body\n"))
            return
        await _answer(send, await endpoint.handle(scope["method"], scope["path"]))

    return app


async def _drain(receive: Receive) -> bool:
    """Read (and drop) the body; False once it passes MAX_BODY."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return True
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return False
        if not message.get("more_body", False):
            return True


async def _answer(send: Send, answer: Answer) -> None:
    body = answer.body.encode()
    headers = [(k.encode(), v.encode()) for k, v in answer.headers]
    headers += [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
