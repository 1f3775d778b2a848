"""Postal's webhooks: each post is signed by the Postal installation with its RSA key,
``X-Postal-Signature-256`` (RSA PKCS#1 v1.5 over SHA-256, base64) on recent Postal,
``X-Postal-Signature`` (over SHA-1) on all; the public key is the one Postal's web UI
shows for webhooks (base64 DER, the ``p=`` of its DNS record), ``webhook.public_key``.

One event per post: ``{"event": "MessageSent", "timestamp", "uuid", "payload"}``. The
message is ``payload.message`` (``payload.original_message`` for a bounce); its
``message_id`` is Postal's Message-ID, which the send returned as ``provider_message_id``
(with ``endpoint = "raw"`` it is ours), so events correlate through it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

from pydantic import SecretStr, field_validator

from .._events.model import DeliveryEvent
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    event_time,
    json_body,
    need_cryptography,
    nonempty_text,
    stable_event_id,
)

__all__ = ["EVENTS", "PostalWebhook", "PostalWebhookConfig"]

#: Postal's event -> (our type, bounce kind); others (MessageHeld, DomainDNSError, ...)
#: are ``unknown``
EVENTS: dict[str, tuple[str, str | None]] = {
    "MessageSent": ("delivered", None), "MessageDelayed": ("deferred", None),
    "MessageDeliveryFailed": ("bounced", "hard"), "MessageBounced": ("bounced", "hard"),
    "MessageLinkClicked": ("clicked", None), "MessageLoaded": ("opened", None),
}  # fmt: skip


class PostalWebhookConfig(WebhookConfig):
    #: the installation's webhook public key: base64 DER (as Postal shows it) or PEM
    public_key: SecretStr

    @field_validator("public_key")
    @classmethod
    def _loads(cls, value: SecretStr) -> SecretStr:
        _public_key(value.get_secret_value())
        return value


def _public_key(text: str) -> Any:
    need_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, binascii.Error):
        raise ValueError(
            "webhook.public_key must be Postal's RSA public key (base64 or PEM)"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("webhook.public_key must be an RSA key")
    return key


class PostalWebhook(WebhookParser[PostalWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = PostalWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        key = _public_key(self.config.public_key.get_secret_value())
        for header, digest in (
            ("x-postal-signature-256", hashes.SHA256()),
            # Postal's legacy header signs with SHA-1: read, never chosen by us
            ("x-postal-signature", hashes.SHA1()),  # noqa: S303
        ):
            value = request.header(header)
            if not value:
                continue
            try:
                signature = base64.b64decode(value, validate=True)
                key.verify(signature, request.body, padding.PKCS1v15(), digest)
            except (InvalidSignature, binascii.Error, ValueError):
                raise WebhookRefused(f"the {header} signature does not verify") from None
            return
        raise WebhookRefused("no X-Postal-Signature header")

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        body = json_body(request)
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, dict):
            raise WebhookMalformed("a Postal post is an object with a payload object")
        name = str(body.get("event") or "")
        ours, bounce = EVENTS.get(name, ("unknown", None))
        message = payload.get("original_message") or payload.get("message")
        if not isinstance(message, dict):
            return []  # DomainDNSError and the like: about the server, not a message
        reason = payload.get("output") or payload.get("details")
        if name == "MessageBounced" and isinstance(payload.get("bounce"), dict):
            reason = payload["bounce"].get("subject") or reason
        return [self.event(
            type=ours,
            recipient=message.get("to"),
            timestamp=event_time(body.get("timestamp") or payload.get("timestamp")),
            provider_message_id=nonempty_text(message.get("message_id")),
            bounce=bounce,
            reason=nonempty_text(reason),
            event_id=nonempty_text(body.get("uuid")) or stable_event_id(name, message.get("id"),
                                                                body.get("timestamp")),
            raw=body,
        )]  # fmt: skip
