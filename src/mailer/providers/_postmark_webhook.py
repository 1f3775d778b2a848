"""Postmark's webhooks: unsigned, so protected by HTTP Basic credentials in the webhook
URL (``webhook.basic_auth``). One event per post, told apart by ``RecordType``; our
``Metadata`` comes back as sent, the correlation key in it.
"""

from __future__ import annotations

from .._events.model import DeliveryEvent
from .http.correlation import CORRELATION_KEY
from .http.webhook import (
    BasicAuthWebhookParser,
    WebhookMalformed,
    WebhookRequest,
    event_time,
    json_body,
    nonempty_text,
    stable_event_id,
)

__all__ = ["BOUNCE_TYPES", "PostmarkWebhook"]

#: a Bounce record's ``Type`` -> (our type, bounce kind); other types are ``unknown``
BOUNCE_TYPES: dict[str, tuple[str, str | None]] = {
    "HardBounce": ("bounced", "hard"), "BadEmailAddress": ("bounced", "hard"),
    "ManuallyDeactivated": ("bounced", "hard"), "SoftBounce": ("bounced", "soft"),
    "Transient": ("bounced", "soft"), "DnsError": ("bounced", "soft"),
    "Blocked": ("bounced", "soft"), "SpamComplaint": ("complained", None),
    "Unsubscribe": ("unsubscribed", None),
}  # fmt: skip
#: RecordType -> (our type, the field holding the time)
RECORD_TYPES: dict[str, tuple[str, str]] = {
    "Delivery": ("delivered", "DeliveredAt"), "Bounce": ("bounced", "BouncedAt"),
    "SpamComplaint": ("complained", "BouncedAt"), "Open": ("opened", "ReceivedAt"),
    "Click": ("clicked", "ReceivedAt"), "SubscriptionChange": ("unsubscribed", "ChangedAt"),
}  # fmt: skip
#: SubscriptionChange's ``SuppressionReason`` -> what it reports
SUPPRESSION_REASONS: dict[str, tuple[str, str | None]] = {
    "HardBounce": ("bounced", "hard"), "SpamComplaint": ("complained", None),
    "ManualSuppression": ("unsubscribed", None),
}  # fmt: skip


class PostmarkWebhook(BasicAuthWebhookParser):
    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        record = json_body(request)
        if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
            raise WebhookMalformed("a Postmark post is an object with a RecordType")
        kind: str
        kind, time_field = RECORD_TYPES.get(record["RecordType"], ("unknown", "ReceivedAt"))
        bounce: str | None = None
        if record["RecordType"] in ("Bounce", "SpamComplaint"):
            kind, bounce = BOUNCE_TYPES.get(str(record.get("Type")), ("unknown", None))
        elif record["RecordType"] == "SubscriptionChange":
            if record.get("SuppressSending"):
                why = str(record.get("SuppressionReason"))
                kind, bounce = SUPPRESSION_REASONS.get(why, ("unsubscribed", None))
            else:
                kind = "unknown"  # reactivated: our list is changed by hand only
        recipient = record.get("Recipient") or record.get("Email")
        stamp = record.get(time_field)
        event_id = (
            f"bounce:{record['ID']}"
            if record.get("ID") is not None
            else stable_event_id(record["RecordType"], record.get("MessageID"), recipient, stamp)
        )
        metadata = record.get("Metadata") or {}
        reason = record.get("Description") or record.get("Details")
        return [
            self.event(
                type=kind,
                recipient=recipient,
                timestamp=event_time(stamp),
                message_id=nonempty_text(metadata.get(CORRELATION_KEY)),
                provider_message_id=nonempty_text(record.get("MessageID")),
                bounce=bounce,
                reason=nonempty_text(reason),
                event_id=event_id,
                raw=record,
            )
        ]
