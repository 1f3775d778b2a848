"""Mandrill's webhooks: a form post with ``mandrill_events``, signed by X-Mandrill-Signature.

The signature is base64 HMAC-SHA1, keyed with the webhook's key, over the webhook URL
exactly as registered in Mandrill followed by every POST field's name and value, sorted
by name (Mandrill's "Authenticating webhook requests"). The URL is part of what is
signed, so the ``webhook`` block names it (``url``) next to the ``key``.

``mandrill_events`` is a JSON array: ``{"event": "hard_bounce", "ts": 1365109999,
"_id": ..., "msg": {"email", "metadata", "bounce_description", "diag", ...}}``. Our
metadata comes back in ``msg.metadata``, so ``mailer_message_id`` is read there; ``_id``
is Mandrill's id for the message to that recipient. Sync events (``whitelist``,
``blacklist``) have no ``msg`` and are skipped; the post Mandrill sends when a webhook is
created has an empty array.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from pydantic import SecretStr, field_validator

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    event_time,
    nonempty_text,
    stable_event_id,
)

__all__ = ["EVENT_TYPES", "MandrillWebhook", "MandrillWebhookConfig", "signature"]

SIGNATURE = "x-mandrill-signature"

#: Mandrill's event -> ours (docs/events.md)
EVENT_TYPES: dict[str, str] = {
    "send": "accepted", "deferral": "deferred", "hard_bounce": "bounced",
    "soft_bounce": "bounced", "open": "opened", "click": "clicked", "spam": "complained",
    "unsub": "unsubscribed", "reject": "rejected", "delivered": "delivered",
}  # fmt: skip


class MandrillWebhookConfig(WebhookConfig):
    #: the webhook's key, from Mandrill's Webhooks page
    key: SecretStr
    #: the webhook URL exactly as registered in Mandrill (it is part of what is signed)
    url: str

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("webhook.url must be the http(s) URL registered in Mandrill")
        return value


def signature(key: str, url: str, fields: list[tuple[str, str]]) -> str:
    """Mandrill's X-Mandrill-Signature for a post of ``fields`` to ``url``."""
    signed = url + "".join(name + value for name, value in sorted(fields))
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class MandrillWebhook(WebhookParser[MandrillWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = MandrillWebhookConfig

    @staticmethod
    def _fields(request: WebhookRequest) -> list[tuple[str, str]]:
        try:
            return parse_qsl(
                request.body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=bool(request.body),
            )
        except (UnicodeDecodeError, ValueError):
            raise WebhookMalformed("a Mandrill post is form-encoded") from None

    async def verify(self, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE)
        if not given:
            raise WebhookRefused("no X-Mandrill-Signature header")
        try:
            fields = self._fields(request)
        except WebhookMalformed:
            raise WebhookRefused("the Mandrill signature does not verify") from None
        key = self.config.key.get_secret_value()
        if not hmac.compare_digest(given.strip(), signature(key, self.config.url, fields)):
            raise WebhookRefused("the Mandrill signature does not verify (check webhook.url)")

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        fields = dict(self._fields(request))
        try:
            items = json.loads(fields.get("mandrill_events", ""))
        except ValueError:
            raise WebhookMalformed("mandrill_events is not JSON") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WebhookMalformed("mandrill_events is a JSON array of event objects")
        return [self._event(item) for item in items if isinstance(item.get("msg"), dict)]

    def _event(self, item: dict[str, Any]) -> DeliveryEvent:
        msg: dict[str, Any] = item["msg"]
        kind = item.get("event")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            bounce = "hard" if kind == "hard_bounce" else "soft"
        meta = msg.get("metadata")
        return self.event(
            type=ours,
            recipient=msg.get("email"),
            timestamp=event_time(item.get("ts")),
            message_id=nonempty_text(meta.get(CORRELATION_KEY)) if isinstance(meta, dict) else None,
            provider_message_id=nonempty_text(item.get("_id") or msg.get("_id")),
            bounce=bounce,
            reason=nonempty_text(msg.get("diag") or msg.get("bounce_description")),
            event_id=stable_event_id(item.get("_id"), kind, item.get("ts")),
            raw=item,
        )
