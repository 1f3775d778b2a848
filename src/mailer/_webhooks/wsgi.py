"""The WSGI receiver, for a SyncMailer: the same answers, the work on its event loop.

The body is read from ``wsgi.input`` up to :data:`MAX_BODY` + 1 bytes at most, so an
over-long post is answered 413 without being held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from .._sync import SyncMailer
from .handler import MAX_BODY, Reply, handler_for, too_large

__all__ = ["serve_sync", "wsgi_app"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large",
            503: "Service Unavailable"}  # fmt: skip

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def wsgi_app(mailer: SyncMailer) -> WSGIApp:
    """A WSGI app answering the ESPs' webhook posts for ``mailer``'s providers."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}  # fmt: skip
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = _length(environ.get("CONTENT_LENGTH"))
        name = environ.get("PATH_INFO", "").rstrip("/").rpartition("/")[2]
        method = environ.get("REQUEST_METHOD", "GET")
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        reply = serve_sync(mailer, method, name, headers, length, environ["wsgi.input"].read,
                           query)  # fmt: skip
        answer = reply.json()
        start_response(f"{reply.status} {_REASONS.get(reply.status, '')}".strip(),
                       [*reply.headers, ("Content-Length", str(len(answer)))])  # fmt: skip
        return [answer]

    return app


def serve_sync(
    mailer: SyncMailer, method: str, name: str, headers: dict[str, str], length: int | None,
    read: Callable[[int], bytes], query: dict[str, str],
) -> Reply:  # fmt: skip
    """One request for a synchronous server (WSGI, Django, Flask): routed and read in
    the server's thread (at most MAX_BODY + 1 bytes), then verified, parsed and stored
    on the SyncMailer's event loop, as its send() is."""
    handler = handler_for(mailer.mailer)
    routed = handler.route(method, name, length)
    if isinstance(routed, Reply):
        return routed
    body: bytes = read(length if length is not None else MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return too_large()
    parser = routed
    return mailer._call(lambda m: handler_for(m).process(parser, headers, body, query), "webhook")


def _length(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
