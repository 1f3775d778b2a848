"""MailerSend's webhooks: ``Signature`` = hex HMAC-SHA256 of the body with the signing secret.

One event per post: ``{"type": "activity.delivered", "created_at": ..., "data": {"id",
"type", "created_at", "email": {"message": {"id"}, "recipient": {"email"}, ...},
"morph": {...}}}``. MailerSend carries no metadata, so there is no correlation key: the
event names ``data.email.message.id``, the ``X-Message-Id`` the send recorded as
``provider_message_id``, and ingest finds the message from it. A bounce's reason is in
``morph.readable_reason`` (or ``reason``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr

from .._events.model import DeliveryEvent
from .http.webhook import (
    HmacBodyWebhookParser,
    SigningSecretWebhookConfig,
    WebhookConfig,
    WebhookMalformed,
    WebhookRequest,
    event_time,
    json_body,
    nonempty_text,
)

__all__ = ["EVENT_TYPES", "MailerSendWebhook", "MailerSendWebhookConfig"]

SIGNATURE = "signature"

#: MailerSend's activity -> ours (docs/events.md)
EVENT_TYPES: dict[str, str] = {
    "activity.sent": "accepted", "activity.delivered": "delivered",
    "activity.soft_bounced": "bounced", "activity.hard_bounced": "bounced",
    "activity.spam_complaint": "complained", "activity.unsubscribed": "unsubscribed",
    "activity.opened": "opened", "activity.opened_unique": "opened",
    "activity.clicked": "clicked", "activity.clicked_unique": "clicked",
    "activity.survey_opened": "unknown", "activity.survey_submitted": "unknown",
}  # fmt: skip


class MailerSendWebhookConfig(SigningSecretWebhookConfig):
    #: the webhook's signing secret, as MailerSend's webhook page shows it
    signing_secret: SecretStr


class MailerSendWebhook(HmacBodyWebhookParser[MailerSendWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = MailerSendWebhookConfig
    signature_header = SIGNATURE
    missing_signature = "no MailerSend Signature header"
    bad_signature = "the MailerSend signature does not verify"

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        item = json_body(request)
        data = item.get("data") if isinstance(item, dict) else None
        if not isinstance(data, dict):
            raise WebhookMalformed("a MailerSend post is an object with a 'data' object")
        email = _object(data.get("email"))
        recipient, message = _object(email.get("recipient")), _object(email.get("message"))
        morph = _object(data.get("morph"))
        kind = item.get("type")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            bounce = "hard" if kind == "activity.hard_bounced" else "soft"
        return [
            self.event(
                type=ours,
                recipient=recipient.get("email"),
                timestamp=event_time(data.get("created_at") or item.get("created_at")),
                provider_message_id=nonempty_text(message.get("id")),
                bounce=bounce,
                reason=nonempty_text(morph.get("readable_reason") or morph.get("reason")),
                event_id=nonempty_text(data.get("id")),
                raw=item,
            )
        ]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
