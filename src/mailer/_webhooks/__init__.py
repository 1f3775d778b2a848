"""Serving the ESPs' webhooks (docs/events.md): one handler, thin adapters per server.

``handler`` holds the answers (405, 404, 413, 401, 400, 2xx once stored) and knows no
server; ``asgi`` and ``wsgi`` read a request into it. The public face is
``mailer.webhooks``.
"""

from __future__ import annotations

from .handler import MAX_BODY, Reply, WebhookHandler

__all__ = ["MAX_BODY", "Reply", "WebhookHandler"]
