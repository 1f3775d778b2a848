"""A small Flask extension: ``mail = Mail(app)``, then ``mail.send(message)`` in views.

The Mailer comes from ``app.config["MAILER"]`` (a mapping or a TOML/JSON path) and is
shared by every request of the process: its SMTP pool and HTTP keep-alive and its
breakers are worth having only across requests. So it is *not* closed when a request's
app context is torn down (that would cost a TCP, TLS and AUTH handshake per request);
it is closed by ``mail.close()``, or at interpreter exit. Forked workers (gunicorn) each
build their own on first use.

Async views use ``await mail.send_async(message)``: Flask runs each async view on an
event loop of its own, so the send runs on the shared Mailer's loop and is awaited here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, has_app_context, request

from .._errors import ConfigError
from .._message import Message
from .._result import SendResult
from .._sync import SyncMailer
from .._webhooks.wsgi import serve_sync
from ._process import build, config_key, discard, read_source, shared_mailer

__all__ = ["Mail"]

_EXTENSION = "mailer"


class Mail:
    """The extension. ``Mail(app)``, or ``mail = Mail()`` then ``mail.init_app(app)``.

    Settings: ``MAILER`` (required: the Mailer config) and ``MAILER_OPENTELEMETRY``
    (default False: instrument the Mailer with the global OpenTelemetry providers).
    """

    def __init__(self, app: Flask | None = None) -> None:
        #: the app given to the constructor: ``close()`` and ``mailer`` need no app
        #: context for it (a script or a shutdown hook has none)
        self._app = app
        if app is not None:
            self.init_app(app)

    def _current(self, app: Flask | None) -> Flask:
        """``app``, else the app of the current context, else the constructor's app."""
        if app is not None:
            return app
        if has_app_context() or self._app is None:
            return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]
        return self._app

    def init_app(self, app: Flask) -> None:
        source = app.config.get("MAILER")
        if not isinstance(source, Mapping | str | Path):
            raise ConfigError(
                'app.config["MAILER"] must be the Mailer config: a mapping, a provider URL '
                "or the path of a TOML/JSON file"
            )
        telemetry = bool(app.config.get("MAILER_OPENTELEMETRY", False))
        key = config_key("flask", source, telemetry)
        app.extensions[_EXTENSION] = (key, source, telemetry)
        # Built now, so a bad config fails at start-up rather than at the first send.
        self._app_mailer(app)

    def _app_mailer(self, app: Flask | None = None) -> SyncMailer:
        app = self._current(app)
        try:
            key, source, telemetry = app.extensions[_EXTENSION]
        except KeyError:
            raise ConfigError("Mail.init_app(app) was not called for this app") from None
        return shared_mailer(key, lambda: build(read_source(source), opentelemetry=telemetry))

    def webhooks_blueprint(self, name: str = "mailer_webhooks") -> Blueprint:
        """A blueprint answering the ESPs' webhook posts, ``POST /{provider name}``
        (docs/events.md): ``app.register_blueprint(mail.webhooks_blueprint(),
        url_prefix="/mail/events")``. It uses this extension's shared SyncMailer."""
        blueprint = Blueprint(name, __name__)

        # OPTIONS listed: Flask's own automatic answer would hide CloudEvents' validation
        @blueprint.route(
            "/<provider>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        )
        def receive(provider: str) -> Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            reply = serve_sync(
                self.mailer,
                request.method,
                provider,
                headers,
                request.content_length,
                request.stream.read,
                dict(request.args.items()),
            )
            response = Response(reply.json(), status=reply.status, mimetype="application/json")
            for header, value in reply.headers:
                if header != "content-type":
                    response.headers[header] = value
            return response

        return blueprint

    @property
    def mailer(self) -> SyncMailer:
        """The current app's SyncMailer (its ``.mailer`` is the async Mailer)."""
        return self._app_mailer()

    def send(self, message: Message | Mapping[str, Any]) -> SendResult:
        """Send and wait; raises what ``Mailer.send`` raises."""
        return self.mailer.send(_message(message))

    async def send_async(self, message: Message | Mapping[str, Any]) -> SendResult:
        """For async views: the blocking send runs in a worker thread (Flask gives each
        async view a loop of its own; the shared Mailer lives on another one)."""
        mailer = self.mailer  # resolved here: the worker thread has no app context
        return await asyncio.to_thread(mailer.send, _message(message))

    def close(self, app: Flask | None = None) -> None:
        """Close the app's Mailer (QUIT to pooled SMTP connections); the next send after
        this builds a new one. Also done at interpreter exit."""
        key = self._current(app).extensions[_EXTENSION][0]
        discard(key)


def _message(message: Message | Mapping[str, Any]) -> Message:
    return message if isinstance(message, Message) else Message.build(message)
