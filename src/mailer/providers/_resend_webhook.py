"""Resend's webhooks, signed by Svix: ``svix-id``, ``svix-timestamp`` and
``svix-signature`` (``v1,<base64>`` entries, space-separated), an HMAC-SHA256 of
``id.timestamp.body`` keyed with the base64 part of ``webhook.secret`` (``whsec_...``).

Our correlation key comes back in ``data.tags``, tag-safe encoded
(mailer.providers.http.correlation); ``data.email_id`` is the send's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, ClassVar

from pydantic import SecretStr, field_validator

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY, from_tag_safe
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    check_skew,
    event_time,
    json_body,
)

__all__ = ["EVENT_TYPES", "ResendWebhook", "ResendWebhookConfig"]

#: Resend's event type -> ours; ``email.bounced`` is hard when ``bounce.type`` is
#: ``Permanent``, soft otherwise
EVENT_TYPES: dict[str, str] = {
    "email.sent": "accepted", "email.delivered": "delivered",
    "email.delivery_delayed": "deferred", "email.bounced": "bounced",
    "email.complained": "complained", "email.opened": "opened", "email.clicked": "clicked",
    "email.failed": "rejected", "email.scheduled": "unknown",
}  # fmt: skip


class ResendWebhookConfig(WebhookConfig):
    #: the webhook's signing secret as Resend shows it: ``whsec_`` and base64
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        _key(value)
        return value


def _key(secret: SecretStr) -> bytes:
    text = secret.get_secret_value()
    if not text.startswith("whsec_"):
        raise ValueError("webhook.secret must be the whsec_... signing secret Resend shows")
    try:
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook.secret must be whsec_ followed by base64") from None


class ResendWebhook(WebhookParser[ResendWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = ResendWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        msg_id, timestamp = request.header("svix-id"), request.header("svix-timestamp")
        signatures = request.header("svix-signature")
        if not msg_id or not timestamp or not signatures:
            raise WebhookRefused("no Svix signature headers (svix-id, -timestamp, -signature)")
        check_skew(timestamp, request.now)
        content = f"{msg_id}.{timestamp}.".encode() + request.body
        digest = hmac.new(_key(self.config.secret), content, hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode()
        for entry in signatures.split():
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return
        raise WebhookRefused("the Svix signature does not verify")

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        body = json_body(request)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise WebhookMalformed("a Resend post is an object with a data object")
        kind = body.get("type")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce_info = data.get("bounce") or {}
        bounce = None
        if ours == "bounced":
            bounce = "hard" if bounce_info.get("type") == "Permanent" else "soft"
        failed = data.get("failed") or {}
        reason = bounce_info.get("message") or failed.get("reason")
        to = data.get("to")
        recipients = to if isinstance(to, list) else [to]
        svix_id = request.header("svix-id")
        return [
            self.event(
                type=ours,
                recipient=recipient,
                timestamp=event_time(body.get("created_at")),
                message_id=_message_id(data.get("tags")),
                provider_message_id=_text(data.get("email_id")),
                bounce=bounce,
                reason=_text(reason),
                event_id=svix_id if len(recipients) == 1 else f"{svix_id}:{n}",
                raw=body,
            )
            for n, recipient in enumerate(recipients)
        ]


def _message_id(tags: Any) -> str | None:
    """The correlation key from ``tags``: an object, or a list of name/value pairs."""
    if isinstance(tags, list):
        tags = {t.get("name"): t.get("value") for t in tags if isinstance(t, dict)}
    value = tags.get(CORRELATION_KEY) if isinstance(tags, dict) else None
    return from_tag_safe(value) if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
