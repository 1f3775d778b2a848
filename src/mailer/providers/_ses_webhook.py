"""Amazon SES events through SNS: the SNS message's signature, then the SES event in it.

SNS signs a canonical string of the message's fields (``Message``, ``MessageId``,
``Subject`` if any, ``SubscribeURL`` and ``Token`` for confirmations, ``Timestamp``,
``TopicArn``, ``Type``, each name and value on its own line) with RSA: SHA-1 for
``SignatureVersion`` 1, SHA-256 for 2. The certificate is fetched only from
``https://sns.<region>.amazonaws.com/...pem`` (any other URL is refused before any
request) and cached per URL. The topic must be one of ``webhook.topic_arns``.

A ``SubscriptionConfirmation`` is confirmed (its ``SubscribeURL``, checked the same way,
is fetched) after it verifies; it carries no events. There is no switch to skip
verification: tests replace :attr:`SESWebhook.fetch` (what downloads a checked URL),
never the checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

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
    need_cryptography,
)

__all__ = [
    "EVENT_TYPES",
    "SESWebhook",
    "SESWebhookConfig",
    "download",
    "sns_envelope",
    "sns_message",
    "sns_string_to_sign",
]

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$")

#: SES's eventType (or notificationType) -> ours; Bounce is hard when ``bounceType`` is
#: ``Permanent``, soft otherwise
EVENT_TYPES: dict[str, str] = {
    "Send": "accepted", "Delivery": "delivered", "DeliveryDelay": "deferred",
    "Bounce": "bounced", "Complaint": "complained", "Reject": "rejected",
    "Open": "opened", "Click": "clicked", "Rendering Failure": "rejected",
    "Subscription": "unsubscribed",
}  # fmt: skip
#: where each event type lists its recipients (else ``mail.destination``)
_RECIPIENTS = {"Bounce": ("bounce", "bouncedRecipients"),
               "Complaint": ("complaint", "complainedRecipients"),
               "DeliveryDelay": ("deliveryDelay", "delayedRecipients")}  # fmt: skip

Fetch = Callable[[str], Awaitable[bytes]]


class SESWebhookConfig(WebhookConfig):
    #: the SNS topics whose messages are accepted (others: 401)
    topic_arns: list[str] = Field(min_length=1)

    @field_validator("topic_arns")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _ARN.match(arn):
                raise ValueError("webhook.topic_arns holds SNS topic ARNs (arn:aws:sns:...)")
        return value


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """SNS's canonical form of ``message`` (AWS: "Verifying the signatures of Amazon SNS
    messages")."""
    if message.get("Type") == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                "Type"]  # fmt: skip
    lines = []
    for key in keys:
        if key == "Subject" and message.get("Subject") is None:
            continue
        value = message.get(key)
        if not isinstance(value, str):
            raise WebhookRefused(f"the SNS message lacks {key}")
        lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode()


def sns_envelope(message: dict[str, Any], topic_arns: list[str], now: float) -> str:
    """Refuse an SNS ``message`` from another topic, of an unknown signature version or
    with a ``Timestamp`` too far from ``now`` (a replay); return its SignatureVersion."""
    if message.get("TopicArn") not in topic_arns:
        raise WebhookRefused("the SNS topic is not one of webhook.topic_arns")
    version = message.get("SignatureVersion")
    if version not in ("1", "2"):
        raise WebhookRefused("the SNS SignatureVersion is not 1 or 2")
    check_skew(event_time(message.get("Timestamp")).timestamp(), now)
    return str(version)


def _sns_url(url: Any, what: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not _SNS_HOST.match(parts.hostname or ""):
        raise WebhookRefused(f"the {what} is not an https://sns.<region>.amazonaws.com URL")
    return str(url)


async def download(url: str) -> bytes:
    """A certificate (or confirmation) URL's body; the caller has checked the URL."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


class SESWebhook(WebhookParser[SESWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = SESWebhookConfig

    def __init__(self, provider: str, config: SESWebhookConfig) -> None:
        super().__init__(provider, config)
        need_cryptography()
        #: downloads a URL already checked to be SNS's (tests serve a certificate here)
        self.fetch: Fetch = download
        self._certificates: dict[str, Any] = {}

    async def verify(self, request: WebhookRequest) -> None:
        message = sns_message(request)
        version = sns_envelope(message, self.config.topic_arns, request.now)
        certificate = await self._certificate(
            _sns_url(message.get("SigningCertURL"), "SigningCertURL")
        )
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the SNS signing certificate holds no RSA key")
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS v1
        try:
            signature = base64.b64decode(str(message.get("Signature")), validate=True)
            key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), digest)
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookRefused("the SNS signature does not verify") from None

    async def _certificate(self, url: str) -> Any:
        cached = self._certificates.get(url)
        if cached is None:
            from cryptography.x509 import load_pem_x509_certificate

            try:
                cached = load_pem_x509_certificate(await self.fetch(url))
            except (httpx.HTTPError, ValueError):
                raise WebhookRefused("the SNS signing certificate could not be read") from None
            self._certificates[url] = cached
        return cached

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        message = sns_message(request)
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            try:
                await self.fetch(_sns_url(message.get("SubscribeURL"), "SubscribeURL"))
            except (httpx.HTTPError, WebhookRefused):
                raise WebhookMalformed("the SNS subscription could not be confirmed") from None
            return []
        if kind != "Notification":
            return []  # UnsubscribeConfirmation: nothing to store
        try:
            event = json.loads(str(message.get("Message")))
        except ValueError:
            raise WebhookMalformed("the SNS Message is not an SES event (JSON)") from None
        if not isinstance(event, dict) or not isinstance(event.get("mail"), dict):
            raise WebhookMalformed("the SNS Message is not an SES event")
        return self._events(event, str(message.get("MessageId")))

    def _events(self, event: dict[str, Any], sns_id: str) -> list[DeliveryEvent]:
        name = event.get("eventType") or event.get("notificationType")
        ours = EVENT_TYPES.get(name, "unknown") if isinstance(name, str) else "unknown"
        mail: dict[str, Any] = event["mail"]
        detail_key = {"Rendering Failure": "failure", "DeliveryDelay": "deliveryDelay"}.get(
            str(name), str(name)[:1].lower() + str(name)[1:]
        )
        detail = event.get(detail_key) or {}
        bounce = None
        if ours == "bounced":
            bounce = "hard" if detail.get("bounceType") == "Permanent" else "soft"
        where = _RECIPIENTS.get(str(name))
        if where is not None:
            listed = (event.get(where[0]) or {}).get(where[1]) or []
            recipients = [(r.get("emailAddress"), r.get("diagnosticCode")) for r in listed]
        else:
            found = detail.get("recipients") or mail.get("destination") or []
            recipients = [(r, None) for r in found]
        reason = detail.get("smtpResponse") or detail.get("reason") or detail.get("bounceSubType")
        tags = mail.get("tags") or {}
        values = tags.get(CORRELATION_KEY) if isinstance(tags, dict) else None
        message_id = from_tag_safe(values[0]) if isinstance(values, list) and values else None
        return [
            self.event(
                type=ours,
                recipient=address,
                timestamp=event_time(detail.get("timestamp") or mail.get("timestamp")),
                message_id=message_id,
                provider_message_id=mail.get("messageId"),
                bounce=bounce,
                reason=diagnostic or (reason if isinstance(reason, str) else None),
                event_id=f"{sns_id}:{n}",
                raw=event,
            )
            for n, (address, diagnostic) in enumerate(recipients)
        ]


def sns_message(request: WebhookRequest) -> dict[str, Any]:
    """The SNS message; its signature is inside, so an unreadable one is refused."""
    try:
        message = json_body(request)
    except WebhookMalformed:
        raise WebhookRefused("the body is not an SNS message (JSON)") from None
    if not isinstance(message, dict):
        raise WebhookRefused("the body is not an SNS message")
    return message
