"""SparkPost's event webhooks: HTTP Basic credentials, a JSON array of ``msys`` events.

SparkPost does not sign its posts; a webhook is created with ``auth_type: basic`` and
``auth_credentials`` (``webhook.basic_auth = "user:password"``), which it sends on every
post. The body is ``[{"msys": {"message_event": {...}}}, ...]`` (also ``track_event``,
``unsubscribe_event``, ``relay_event``); SparkPost's test post is ``[{"msys": {}}]``.

Correlation: the transmission's metadata comes back merged into ``rcpt_meta``, so
``mailer_message_id`` is read there; ``transmission_id`` is the id the send recorded.
A bounce is hard for the classes SparkPost calls hard (10 invalid recipient, 25 admin
failure, 30 generic without RCPT, 90 unsubscribe), soft otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY
from .http.webhook import (
    BasicAuthWebhookConfig,
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRequest,
    check_basic_auth,
    event_time,
    json_body,
)

__all__ = ["EVENT_TYPES", "SparkPostWebhook"]

#: SparkPost's event type -> ours (docs/events.md)
EVENT_TYPES: dict[str, str] = {
    "injection": "accepted", "delivery": "delivered", "delay": "deferred",
    "bounce": "bounced", "out_of_band": "bounced", "spam_complaint": "complained",
    "policy_rejection": "rejected", "generation_rejection": "rejected",
    "generation_failure": "rejected", "open": "opened", "initial_open": "opened",
    "amp_open": "opened", "amp_initial_open": "opened", "click": "clicked",
    "amp_click": "clicked", "list_unsubscribe": "unsubscribed",
    "link_unsubscribe": "unsubscribed",
}  # fmt: skip
#: bounce classes SparkPost documents as hard
_HARD = {"10", "25", "30", "90"}


class SparkPostWebhook(WebhookParser[BasicAuthWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = BasicAuthWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        check_basic_auth(request, self.config)

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        items = json_body(request)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise WebhookMalformed("a SparkPost post is a JSON array of {'msys': ...} objects")
        events = []
        for item in items:
            msys = item.get("msys")
            if not isinstance(msys, dict):
                raise WebhookMalformed("a SparkPost event has no 'msys' object")
            for body in msys.values():  # one of message_event, track_event, ...
                if isinstance(body, dict) and body.get("rcpt_to"):
                    events.append(self._event(body))
        return events

    def _event(self, body: dict[str, Any]) -> DeliveryEvent:
        kind = body.get("type")
        ours = EVENT_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"
        bounce = None
        if ours == "bounced":
            bounce = "hard" if str(body.get("bounce_class")) in _HARD else "soft"
        meta = body.get("rcpt_meta")
        return self.event(
            type=ours,
            recipient=body.get("rcpt_to"),
            timestamp=event_time(body.get("timestamp")),
            message_id=_text(meta.get(CORRELATION_KEY)) if isinstance(meta, dict) else None,
            provider_message_id=_text(body.get("transmission_id")),
            bounce=bounce,
            reason=_text(body.get("raw_reason") or body.get("reason")),
            event_id=_text(body.get("event_id")),
            raw=body,
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
