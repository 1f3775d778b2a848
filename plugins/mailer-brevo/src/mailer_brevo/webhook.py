"""Brevo's transactional webhooks: unsigned, so HTTP Basic credentials in the webhook URL
(``webhook.basic_auth``). One event per post; our metadata (the correlation key among
it) comes back in ``X-Mailin-custom`` as the JSON we sent.
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

__all__ = ["EVENT_TYPES", "BrevoWebhook"]

#: Brevo's event -> (ours, bounce kind)
EVENT_TYPES: dict[str, tuple[str, str | None]] = {
    "request": ("accepted", None), "delivered": ("delivered", None),
    "deferred": ("deferred", None), "hard_bounce": ("bounced", "hard"),
    "soft_bounce": ("bounced", "soft"), "invalid_email": ("bounced", "hard"),
    "blocked": ("rejected", None), "error": ("rejected", None),
    "spam": ("complained", None), "unsubscribed": ("unsubscribed", None),
    "opened": ("opened", None), "unique_opened": ("opened", None),
    "proxy_open": ("opened", None), "click": ("clicked", None),
}  # fmt: skip


class BrevoWebhook(WebhookParser[BasicAuthWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = BasicAuthWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        check_basic_auth(request, self.config)

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        item = json_body(request)
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            raise WebhookMalformed("a Brevo post is an object with an event")
        kind, bounce = EVENT_TYPES.get(item["event"], ("unknown", None))
        stamp = item.get("ts_event") or item.get("ts") or item.get("date")
        return [
            self.event(
                type=kind,
                recipient=item.get("email"),
                timestamp=event_time(stamp),
                message_id=_correlation(item.get("X-Mailin-custom")),
                provider_message_id=_text(item.get("message-id")),
                bounce=bounce,
                reason=_text(item.get("reason")),
                event_id=stable_event_id(
                    item["event"], item.get("message-id"), item.get("email"), stamp
                ),
                raw=item,
            )
        ]


def _correlation(custom: Any) -> str | None:
    try:
        value = json.loads(custom) if isinstance(custom, str) else None
    except ValueError:
        return None  # the user's own X-Mailin-custom text, not ours
    found = value.get(CORRELATION_KEY) if isinstance(value, dict) else None
    return _text(found)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
