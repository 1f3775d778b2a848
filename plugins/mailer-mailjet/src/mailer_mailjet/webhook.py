"""Mailjet's event API: unsigned, so HTTP Basic credentials in the webhook URL
(``webhook.basic_auth``). A post is one event or, with grouping on, an array; our
Message-ID comes back as ``CustomID`` and in ``Payload`` (the EventPayload we sent).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mailer import DeliveryEvent
from mailer.providers.http import (
    CORRELATION_KEY,
    BasicAuthWebhookConfig,
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRequest,
    check_basic_auth,
    event_time,
    json_body,
    stable_event_id,
)

__all__ = ["EVENT_TYPES", "MailjetWebhook"]

#: Mailjet's event -> ours (``sent`` means the receiving server took it: delivered);
#: a bounce is hard or soft by ``hard_bounce``
EVENT_TYPES: dict[str, str] = {
    "sent": "delivered", "bounce": "bounced", "blocked": "rejected", "spam": "complained",
    "unsub": "unsubscribed", "open": "opened", "click": "clicked",
}  # fmt: skip


class MailjetWebhook(WebhookParser[BasicAuthWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = BasicAuthWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        check_basic_auth(request, self.config)

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        body = json_body(request)
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(i, dict) and isinstance(i.get("event"), str) for i in items):
            raise WebhookMalformed("a Mailjet post is an event object or an array of them")
        return [self._event(item) for item in items]

    def _event(self, item: dict[str, Any]) -> DeliveryEvent:
        kind = EVENT_TYPES.get(item["event"], "unknown")
        bounce = ("hard" if item.get("hard_bounce") else "soft") if kind == "bounced" else None
        mj_id = item.get("MessageID")
        return self.event(
            type=kind,
            recipient=item.get("email"),
            timestamp=event_time(item.get("time")),
            message_id=_correlation(item),
            provider_message_id=str(mj_id) if mj_id is not None else None,
            bounce=bounce,
            reason=_text(item.get("error") or item.get("smtp_reply")),
            event_id=stable_event_id(item["event"], mj_id, item.get("email"), item.get("time")),
            raw=item,
        )


def _correlation(item: dict[str, Any]) -> str | None:
    """Our key in the EventPayload, else CustomID when it is a Message-ID."""
    try:
        payload = json.loads(item.get("Payload") or "null")
    except (TypeError, ValueError):
        payload = None
    if isinstance(payload, dict) and _text(payload.get(CORRELATION_KEY)):
        return str(payload[CORRELATION_KEY])
    custom = _text(item.get("CustomID"))
    return custom if custom and custom.startswith("<") and "@" in custom else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
