"""Mailtrap's webhooks: ``Mailtrap-Signature`` = hex HMAC-SHA256 of the body.

The algorithm is the one the official SDK's ``mailtrap.webhooks.verify_signature``
implements (keyed with the webhook's ``signing_secret``, over the raw body). The body is
``{"events": [{"event": "delivery", "message_id", "email", "timestamp", "event_id",
"custom_variables", "response", "response_code", ...}]}``. Our metadata travels as
``custom_variables``, so ``mailer_message_id`` is read there; ``message_id`` is the id
the send recorded. Mailtrap writes the bounce types as ``soft bounce`` (the SDK's email
logs as ``soft_bounce``): both are read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY
from .http.webhook import (
    HmacBodyWebhookParser,
    SigningSecretWebhookConfig,
    WebhookConfig,
    WebhookMalformed,
    WebhookRequest,
    event_time,
    json_body,
    nonempty_text,
    stable_event_id,
)

__all__ = ["EVENT_TYPES", "MailtrapWebhook", "MailtrapWebhookConfig"]

SIGNATURE = "mailtrap-signature"

#: Mailtrap's event -> ours (docs/events.md)
EVENT_TYPES: dict[str, str] = {
    "delivery": "delivered", "open": "opened", "click": "clicked",
    "unsubscribe": "unsubscribed", "spam": "complained", "soft bounce": "bounced",
    "soft_bounce": "bounced", "bounce": "bounced", "suspension": "rejected",
    "reject": "rejected",
}  # fmt: skip


class MailtrapWebhookConfig(SigningSecretWebhookConfig):
    #: the webhook's signing secret (returned when the webhook is created)
    signing_secret: SecretStr


class MailtrapWebhook(HmacBodyWebhookParser[MailtrapWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = MailtrapWebhookConfig
    signature_header = SIGNATURE
    missing_signature = "no Mailtrap-Signature header"
    bad_signature = "the Mailtrap signature does not verify"

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        body = json_body(request)
        items = body.get("events") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WebhookMalformed("a Mailtrap post is {'events': [event objects]}")
        return [self._event(item) for item in items]

    def _event(self, item: dict[str, Any]) -> DeliveryEvent:
        kind = item.get("event")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            bounce = "hard" if kind == "bounce" else "soft"
        meta = item.get("custom_variables")
        reason = item.get("response")
        return self.event(
            type=ours,
            recipient=item.get("email"),
            timestamp=event_time(item.get("timestamp")),
            message_id=nonempty_text(meta.get(CORRELATION_KEY)) if isinstance(meta, dict) else None,
            provider_message_id=nonempty_text(item.get("message_id")),
            bounce=bounce,
            reason=nonempty_text(reason if reason else item.get("reason")),
            event_id=nonempty_text(item.get("event_id"))
            or stable_event_id(item.get("message_id"), kind, item.get("timestamp")),
            raw=item,
        )
