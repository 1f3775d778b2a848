"""Scaleway Transactional Email events, through a Scaleway Topics and Events (SNS) topic.

A TEM webhook publishes to an SNS topic (``arn:scw:sns:<region>:project-<id>:<name>``);
our endpoint is an HTTP subscription of that topic. Topics and Events speaks SNS: the
same ``Type``/``MessageId``/``TopicArn``/``Message``/``Timestamp``/``SignatureVersion``/
``Signature``/``SigningCertURL`` fields and the same canonical string to sign
(:func:`mailer.providers._ses_webhook.sns_string_to_sign`), a ``SubscriptionConfirmation``
whose ``SubscribeURL`` must be visited before notifications flow.

Verification, as Scaleway documents it ("Verifying webhook signatures"): the certificate
at ``SigningCertURL`` is *not* trusted as such; it must be issued by Scaleway's long-term
CA (``https://messaging.s3.fr-par.scw.cloud/<region>/sns/sns-trust-chain.pem``, valid to
2032), then its key verifies the signature. The signing certificate rotates at least
yearly, so certificates are cached by URL and any one the CA issued is accepted. The CA
file is ``webhook.trust_chain`` (a path: pinned, read once) or, without it, downloaded
once from that documented URL for the provider's region. Certificate and confirmation
URLs must be ``https`` on Scaleway's own domains (``scw.cloud``, ``scaleway.com``), checked
before any request; the topic must be one of ``webhook.topic_arns``; a ``Timestamp`` more
than 5 minutes off is a replay. There is no switch to skip any of it: tests replace
:attr:`ScalewayWebhook.fetch` (the download of an already-checked URL), never a check.

The TEM event is the JSON ``Message``: ``id``, ``type``, ``created_at``, ``email_id``,
``email_to``, ``email_headers``, ``email_response_message``... Its message id: the
``Message-ID`` among ``email_headers`` when present (the send recorded Scaleway's
``emails[].message_id``), else ``email_id``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from .._events.model import DeliveryEvent
from ._ses_webhook import Fetch, download, sns_envelope, sns_message, sns_string_to_sign
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    event_time,
    need_cryptography,
    nonempty_text,
)

__all__ = ["EVENT_TYPES", "ScalewayWebhook", "ScalewayWebhookConfig", "trust_chain_url"]

_ARN = re.compile(r"^arn:scw:sns:[a-z]{2}-[a-z]{3}:[A-Za-z0-9_-]+:[A-Za-z0-9_.-]+$")
_SCALEWAY_HOST = re.compile(r"^([a-z0-9-]+\.)*(scw\.cloud|scaleway\.com)$")

#: TEM's event type -> ours and the bounce kind (docs/events.md); ``blocklist_created``
#: names no message and is not stored
EVENT_TYPES: dict[str, tuple[str, str | None]] = {
    "email_queued": ("accepted", None), "email_delivered": ("delivered", None),
    "email_deferred": ("deferred", None), "email_dropped": ("bounced", "hard"),
    "email_mailbox_not_found": ("bounced", "hard"), "email_spam": ("rejected", None),
    "email_blocklisted": ("rejected", None), "unknown_type": ("unknown", None),
}  # fmt: skip


def trust_chain_url(region: str) -> str:
    """Where Scaleway publishes the CA that issues its SNS signing certificates."""
    return f"https://messaging.s3.fr-par.scw.cloud/{region}/sns/sns-trust-chain.pem"


class ScalewayWebhookConfig(WebhookConfig):
    #: the Topics and Events topics whose messages are accepted (others: 401)
    topic_arns: list[str] = Field(min_length=1)
    #: a PEM file holding Scaleway's SNS CA; None downloads it from :func:`trust_chain_url`
    trust_chain: Path | None = None

    @field_validator("topic_arns")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _ARN.match(arn):
                raise ValueError(
                    "webhook.topic_arns holds Scaleway SNS topic ARNs "
                    "(arn:scw:sns:fr-par:project-<id>:<name>)"
                )
        return value

    @field_validator("trust_chain")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"webhook.trust_chain {str(value)!r} is not a file")
        return value


def _scaleway_url(url: Any, what: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not _SCALEWAY_HOST.match(parts.hostname or ""):
        raise WebhookRefused(f"the {what} is not an https URL on Scaleway's domains")
    return str(url)


class ScalewayWebhook(WebhookParser[ScalewayWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = ScalewayWebhookConfig

    def __init__(self, provider: str, config: ScalewayWebhookConfig, region: str = "fr-par"):
        super().__init__(provider, config)
        need_cryptography()
        self.region = region
        #: downloads a URL already checked to be Scaleway's (tests serve certificates here)
        self.fetch: Fetch = download
        self._authorities: list[Any] | None = None
        self._certificates: dict[str, Any] = {}

    async def verify(self, request: WebhookRequest) -> None:
        message = sns_message(request)
        version = sns_envelope(message, self.config.topic_arns, request.now)
        url = _scaleway_url(message.get("SigningCertURL"), "SigningCertURL")
        certificate = await self._certificate(url, request.now)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        key = certificate.public_key()
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS v1
        text = sns_string_to_sign(message)
        try:
            signature = base64.b64decode(str(message.get("Signature")), validate=True)
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, text, padding.PKCS1v15(), digest)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, text, ec.ECDSA(digest))
            else:
                raise WebhookRefused("the signing certificate holds neither an RSA nor an EC key")
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookRefused("the SNS signature does not verify") from None

    async def _certificate(self, url: str, now: float) -> Any:
        """The signing certificate at ``url``, once Scaleway's CA is shown to have issued
        it and it is within its validity (cached by URL; the dates checked each time)."""
        from cryptography.x509 import load_pem_x509_certificate

        certificate = self._certificates.get(url)
        if certificate is None:
            try:
                certificate = load_pem_x509_certificate(await self.fetch(url))
            except (httpx.HTTPError, ValueError):
                raise WebhookRefused("the SNS signing certificate could not be read") from None
            if not any(_issued_by(certificate, ca) for ca in await self._trusted()):
                raise WebhookRefused("the SNS signing certificate is not issued by Scaleway's CA")
            self._certificates[url] = certificate
        moment = datetime.fromtimestamp(now, UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise WebhookRefused("the SNS signing certificate is expired or not yet valid")
        return certificate

    async def _trusted(self) -> list[Any]:
        """Scaleway's CA certificates: the pinned file, else the documented download."""
        if self._authorities is None:
            from cryptography.x509 import load_pem_x509_certificates

            try:
                if self.config.trust_chain is not None:
                    pem = self.config.trust_chain.read_bytes()
                else:
                    pem = await self.fetch(trust_chain_url(self.region))
                self._authorities = load_pem_x509_certificates(pem)
            except (OSError, httpx.HTTPError, ValueError):
                raise WebhookRefused("Scaleway's SNS trust chain could not be read") from None
        return self._authorities

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        message = sns_message(request)
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            try:
                await self.fetch(_scaleway_url(message.get("SubscribeURL"), "SubscribeURL"))
            except (httpx.HTTPError, WebhookRefused):
                raise WebhookMalformed("the SNS subscription could not be confirmed") from None
            return []
        if kind != "Notification":
            return []  # UnsubscribeConfirmation: nothing to store
        try:
            event = json.loads(str(message.get("Message")))
        except ValueError:
            raise WebhookMalformed("the SNS Message is not a TEM event (JSON)") from None
        if not isinstance(event, dict):
            raise WebhookMalformed("the SNS Message is not a TEM event")
        name = event.get("type")
        if name == "blocklist_created":
            return []
        ours, bounce = EVENT_TYPES.get(str(name), ("unknown", None))
        reason = event.get("email_response_message") or event.get("email_error")
        return [
            self.event(
                type=ours,
                recipient=event.get("email_to"),
                timestamp=event_time(event.get("created_at")),
                provider_message_id=_header_message_id(event.get("email_headers"))
                or nonempty_text(event.get("email_id")),
                bounce=bounce,
                reason=nonempty_text(reason),
                event_id=nonempty_text(event.get("id")) or str(message.get("MessageId")),
                raw=event,
            )
        ]


def _issued_by(certificate: Any, authority: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _header_message_id(headers: Any) -> str | None:
    """The Message-ID among ``email_headers`` (a list of ``{"key", "value"}`` pairs or
    an object), else None."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(headers, dict):
        pairs = list(headers.items())
    elif isinstance(headers, list):
        pairs = [(h.get("key"), h.get("value")) for h in headers if isinstance(h, dict)]
    for key, value in pairs:
        if isinstance(key, str) and key.lower() == "message-id":
            return nonempty_text(value)
    return None
