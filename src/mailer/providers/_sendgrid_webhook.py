"""SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over ``timestamp + body``.

The headers are ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER signature) and
``X-Twilio-Email-Event-Webhook-Timestamp`` (epoch seconds); ``webhook.public_key`` is the
base64 key exactly as SendGrid's Mail Settings page shows it (a DER SubjectPublicKeyInfo).
The body is a JSON array of events; our ``custom_args`` come back as top-level fields,
so ``mailer_message_id`` is read from each event.

``sg_message_id`` is the send's ``X-Message-Id`` followed by ``.filter...``: the part
before the first dot is the provider message id the send recorded.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import SecretStr, field_validator

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    check_skew,
    event_time,
    json_body,
    need_cryptography,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["EVENT_TYPES", "SendGridWebhook", "SendGridWebhookConfig"]

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"

#: SendGrid's event -> ours (docs/events.md); ``bounce`` with ``type: blocked`` is soft
EVENT_TYPES: dict[str, str] = {
    "processed": "accepted", "dropped": "rejected", "deferred": "deferred",
    "delivered": "delivered", "bounce": "bounced", "open": "opened", "click": "clicked",
    "spamreport": "complained", "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed", "group_resubscribe": "unknown",
}  # fmt: skip


class SendGridWebhookConfig(WebhookConfig):
    #: the verification key as SendGrid shows it (base64 of a DER P-256 public key)
    public_key: SecretStr

    @field_validator("public_key")
    @classmethod
    def _a_p256_key(cls, value: SecretStr) -> SecretStr:
        _load_key(value.get_secret_value())
        return value


def _load_key(text: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key; cryptography (the ``webhooks`` extra) is imported only here and in
    verify, so sending through SendGrid does not need it."""
    need_cryptography()
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError):
        raise ValueError(
            "webhook.public_key must be the base64 key from SendGrid's Event Webhook page"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("webhook.public_key must be an ECDSA P-256 key")
    return key


class SendGridWebhook(WebhookParser[SendGridWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = SendGridWebhookConfig

    def __init__(self, provider: str, config: SendGridWebhookConfig) -> None:
        super().__init__(provider, config)
        self._key = _load_key(config.public_key.get_secret_value())

    async def verify(self, request: WebhookRequest) -> None:
        signature, timestamp = request.header(SIGNATURE), request.header(TIMESTAMP)
        if not signature or not timestamp:
            raise WebhookRefused("no SendGrid signature headers (enable the Signed Event Webhook)")
        check_skew(timestamp, request.now)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            der = base64.b64decode(signature, validate=True)
            self._key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookRefused("the SendGrid signature does not verify") from None

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        items = json_body(request)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WebhookMalformed("a SendGrid post is a JSON array of event objects")
        return [self._event(item) for item in items]

    def _event(self, item: dict[str, Any]) -> DeliveryEvent:
        kind = item.get("event")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            bounce = "soft" if item.get("type") == "blocked" else "hard"
        sg_id = item.get("sg_message_id")
        return self.event(
            type=ours,
            recipient=item.get("email"),
            timestamp=event_time(item.get("timestamp")),
            message_id=_text(item.get(CORRELATION_KEY)),
            provider_message_id=sg_id.split(".", 1)[0] if isinstance(sg_id, str) else None,
            bounce=bounce,
            reason=_text(item.get("reason") or item.get("response")),
            event_id=_text(item.get("sg_event_id")),
            raw=item,
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
