"""Mailgun's webhooks (v2, JSON): HMAC-SHA256 of ``timestamp + token``, keyed with the
account's HTTP webhook signing key (``webhook.signing_key``), in the body's
``signature`` object; the event in ``event-data``. Our ``v:`` variables come back in
``user-variables``, the correlation key among them.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from pydantic import SecretStr

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
)

__all__ = ["EVENT_TYPES", "MailgunWebhook", "MailgunWebhookConfig"]

#: Mailgun's event -> ours; ``failed`` is a hard bounce when ``severity`` is
#: ``permanent`` and ``deferred`` when ``temporary`` (Mailgun retries it)
EVENT_TYPES: dict[str, str] = {
    "accepted": "accepted", "rejected": "rejected", "delivered": "delivered",
    "failed": "bounced", "opened": "opened", "clicked": "clicked",
    "unsubscribed": "unsubscribed", "complained": "complained",
}  # fmt: skip


class MailgunWebhookConfig(WebhookConfig):
    #: the "HTTP webhook signing key" of Mailgun's Webhooks page (not the API key)
    signing_key: SecretStr


class MailgunWebhook(WebhookParser[MailgunWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = MailgunWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        body = _object(json_body_or_refuse(request))
        signature = body.get("signature")
        if not isinstance(signature, dict):
            raise WebhookRefused("no Mailgun signature object in the body")
        timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
            raise WebhookRefused("the Mailgun signature lacks timestamp, token or signature")
        check_skew(timestamp, request.now)
        key = self.config.signing_key.get_secret_value().encode()
        expected = hmac.new(key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(given)):
            raise WebhookRefused("the Mailgun signature does not verify")

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        data = _object(json_body(request)).get("event-data")
        if not isinstance(data, dict):
            raise WebhookMalformed("a Mailgun post has an event-data object")
        return [self._event(data)]

    def _event(self, data: dict[str, Any]) -> DeliveryEvent:
        kind = data.get("event")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            if data.get("severity") == "temporary":
                ours = "deferred"
            else:
                bounce = "hard"
        status = data.get("delivery-status") or {}
        reason = status.get("description") or status.get("message") or data.get("reason")
        variables = data.get("user-variables") or {}
        headers = (data.get("message") or {}).get("headers") or {}
        header_id = _text(headers.get("message-id"))
        return self.event(
            type=ours,
            recipient=data.get("recipient"),
            timestamp=event_time(data.get("timestamp")),
            message_id=_text(variables.get(CORRELATION_KEY)),
            provider_message_id=f"<{header_id.strip('<>')}>" if header_id else None,
            bounce=bounce,
            reason=_text(reason),
            event_id=_text(data.get("id")),
            raw=data,
        )


def json_body_or_refuse(request: WebhookRequest) -> Any:
    """The signature is inside the body: an unreadable body cannot be verified (401)."""
    try:
        return json_body(request)
    except WebhookMalformed:
        raise WebhookRefused("the body is not JSON, so it carries no Mailgun signature") from None


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookMalformed("a Mailgun post is a JSON object")
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
