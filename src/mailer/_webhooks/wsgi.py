"""The WSGI receiver, for a SyncMailer: the same answers, the work on its event loop.

The body is read from ``wsgi.input`` up to :data:`MAX_BODY` + 1 bytes at most, so an
over-long post is answered 413 without being held whole. ``.../u/{token}`` goes to the
one-click unsubscribe endpoint (when the Mailer has an ``unsubscribe`` config), as in the
ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from .._mailer import Mailer
from .._sync import SyncMailer
from .._unsubscribe.asgi import default_suppress
from .._unsubscribe.endpoint import MAX_BODY as UNSUBSCRIBE_MAX_BODY
from .._unsubscribe.endpoint import Answer, UnsubscribeEndpoint
from .handler import MAX_BODY, Reply, handler_for, serves_unsubscribe, too_large

__all__ = ["serve_sync", "wsgi_app"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large",
            503: "Service Unavailable"}  # fmt: skip

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def wsgi_app(mailer: SyncMailer) -> WSGIApp:
    """A WSGI app answering the ESPs' webhook posts for ``mailer``'s providers (and the
    one-click unsubscribe route when the Mailer has an ``unsubscribe`` config)."""
    unsubscribe = serves_unsubscribe(handler_for(mailer.mailer))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if unsubscribe and UnsubscribeEndpoint.token_of(path) is not None:
            return _unsubscribe(mailer, environ, path, start_response)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}  # fmt: skip
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = _length(environ.get("CONTENT_LENGTH"))
        name = environ.get("PATH_INFO", "").rstrip("/").rpartition("/")[2]
        method = environ.get("REQUEST_METHOD", "GET")
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        reply = serve_sync(mailer, method, name, headers, length, environ["wsgi.input"].read, query)
        answer = reply.json()
        start_response(
            f"{reply.status} {_REASONS.get(reply.status, '')}".strip(),
            [*reply.headers, ("Content-Length", str(len(answer)))],
        )
        return [answer]

    return app


def serve_sync(
    mailer: SyncMailer,
    method: str,
    name: str,
    headers: dict[str, str],
    length: int | None,
    read: Callable[[int], bytes],
    query: dict[str, str],
) -> Reply:
    """One request for a synchronous server (WSGI, Django, Flask): routed and read in
    the server's thread (at most MAX_BODY + 1 bytes), then verified, parsed and stored
    on the SyncMailer's event loop, as its send() is."""
    handler = handler_for(mailer.mailer)
    routed = handler.route(method, name, length)
    if isinstance(routed, Reply):
        return routed
    if length is None and method.upper() == "OPTIONS":
        body = b""  # a validation request has no body: reading for one would block
    else:
        body = read(length if length is not None else MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return too_large()
    parser = routed
    return mailer._call(
        lambda m: handler_for(m).process(parser, headers, body, query, method), "webhook"
    )


def _unsubscribe(
    mailer: SyncMailer, environ: dict[str, Any], path: str, start_response: StartResponse
) -> Iterable[bytes]:
    """``GET``/``POST .../u/{token}``: the endpoint's answer, stored on the SyncMailer's
    event loop (its suppression list) before a 200."""
    # the body is not needed (the token is the authority): read it only within bounds
    length = _length(environ.get("CONTENT_LENGTH"))
    method = environ.get("REQUEST_METHOD", "GET")
    if length is not None and length > UNSUBSCRIBE_MAX_BODY:
        answer = Answer(413, "a one-click request has a short body\n")
    else:
        if length:
            environ["wsgi.input"].read(length)
        answer = mailer._call(lambda m: _endpoint(m).handle(method, path), "unsubscribe")
    data = answer.body.encode()
    start_response(
        f"{answer.status} {_REASONS.get(answer.status, '')}".strip(),
        [
            *answer.headers,
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def _endpoint(m: Mailer) -> UnsubscribeEndpoint:
    assert m.unsubscribe is not None  # serves_unsubscribe checked it
    return UnsubscribeEndpoint(m.unsubscribe, default_suppress(m))


def _length(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
