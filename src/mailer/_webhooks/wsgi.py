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

__all__ = ["wsgi_app"]

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
        handler = handler_for(mailer.mailer)
        routed = handler.route(method, name, length)
        if isinstance(routed, Reply):
            reply = routed
        else:
            data = _read(environ["wsgi.input"], length)
            if data is None:
                reply = too_large()
            else:
                parser, posted = routed, data
                # the handler runs on the SyncMailer's event loop, as its send() does
                reply = mailer._call(
                    lambda m: handler_for(m).process(parser, headers, posted, query), "webhook"
                )
        answer = reply.json()
        start_response(f"{reply.status} {_REASONS.get(reply.status, '')}".strip(),
                       [*reply.headers, ("Content-Length", str(len(answer)))])  # fmt: skip
        return [answer]

    return app


def _read(stream: Any, length: int | None) -> bytes | None:
    """The body, read in this (the server's) thread; None past MAX_BODY."""
    body: bytes = stream.read(length) if length is not None else stream.read(MAX_BODY + 1)
    return None if len(body) > MAX_BODY else body


def _length(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
