"""Receive the ESPs' delivery events over HTTP (docs/events.md).

``asgi_app(mailer)`` and ``wsgi_app(sync_mailer)`` answer ``POST /{provider name}`` for
every provider whose config has a ``webhook`` block: each post is verified as its ESP
signs it, parsed into :class:`mailer.DeliveryEvent` records and stored through
``ingest_events`` before the 200 goes back. Django (``mailer.django.urls``), Flask (the
``Mail`` extension's blueprint) and ``mailer webhooks serve`` use the same handler.
"""

from __future__ import annotations

from ._webhooks import MAX_BODY, Reply, WebhookHandler
from ._webhooks.asgi import asgi_app
from ._webhooks.wsgi import wsgi_app

__all__ = ["MAX_BODY", "Reply", "WebhookHandler", "asgi_app", "wsgi_app"]
