"""One-click unsubscribe (RFC 8058) over HTTP (docs/deliverability.md).

``asgi_app(mailer)`` answers ``POST {prefix}/u/{token}`` (unsubscribe, 200 once stored),
``GET`` (a confirmation page; never unsubscribes) and 400 for a bad or expired token.
Mount it where the Mailer's ``unsubscribe.base_url`` points; or serve the webhook app
(``mailer.webhooks.asgi_app``/``wsgi_app``), which carries the same route. ``suppress`` stores the
unsubscribe (default: the Mailer's suppression list).
"""

from __future__ import annotations

from ._unsubscribe import Claim, InvalidToken, UnsubscribeConfig, make_token, read_token
from ._unsubscribe.asgi import asgi_app, default_suppress
from ._unsubscribe.endpoint import UnsubscribeEndpoint

__all__ = [
    "Claim",
    "InvalidToken",
    "UnsubscribeConfig",
    "UnsubscribeEndpoint",
    "asgi_app",
    "default_suppress",
    "make_token",
    "read_token",
]
