"""Unisender Go's webhooks: one post holds ``events_by_user[].events[]``; its ``auth``
field is the MD5 (hex) of the very body with that field's value replaced by the API key
(Unisender Go's documented check, as django-anymail makes it). The check is made on the
bytes as received, so a re-serialisation cannot break it.

``transactional_email_status`` events carry ``event_data.status`` (``sent``,
``delivered``, ``opened``, ``clicked``, ``unsubscribed``, ``subscribed``,
``soft_bounced``, ``hard_bounced``, ``spam``), ``job_id`` (the send's id) and our
``metadata`` back: the correlation key in it names our Message-ID.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
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
    json_body,
    stable_event_id,
)

__all__ = ["STATUSES", "UnisenderGoWebhook", "UnisenderGoWebhookConfig"]

#: ``event_data.status`` -> (our type, bounce kind)
STATUSES: dict[str, tuple[str, str | None]] = {
    "sent": ("accepted", None), "delivered": ("delivered", None),
    "opened": ("opened", None), "clicked": ("clicked", None),
    "unsubscribed": ("unsubscribed", None), "soft_bounced": ("bounced", "soft"),
    "hard_bounced": ("bounced", "hard"), "spam": ("complained", None),
}  # fmt: skip


class UnisenderGoWebhookConfig(WebhookConfig):
    #: the API key the webhook was registered with (it keys the ``auth`` digest)
    api_key: SecretStr


class UnisenderGoWebhook(WebhookParser[UnisenderGoWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = UnisenderGoWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        body = json_body_or_refuse(request)
        given = body.get("auth") if isinstance(body, dict) else None
        if not isinstance(given, str) or not given:
            raise WebhookRefused("no auth field in the body")
        key = self.config.api_key.get_secret_value().encode()
        signed = request.body.replace(given.encode(), key, 1)
        expected = hashlib.md5(signed, usedforsecurity=False).hexdigest()
        if not hmac.compare_digest(given.lower(), expected):
            raise WebhookRefused("the auth digest does not verify (another API key?)")

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        body = json_body(request)
        users = body.get("events_by_user") if isinstance(body, dict) else None
        if not isinstance(users, list):
            raise WebhookMalformed("a Unisender Go post has an events_by_user list")
        out: list[DeliveryEvent] = []
        for user in users:
            events = user.get("events") if isinstance(user, dict) else None
            for item in events if isinstance(events, list) else []:
                if isinstance(item, dict) and item.get("event_name") == (
                    "transactional_email_status"
                ):
                    out.append(self._event(item.get("event_data"), item))
        return out

    def _event(self, data: Any, raw: Any) -> DeliveryEvent:
        if not isinstance(data, dict):
            raise WebhookMalformed("an email status event has no event_data object")
        status = str(data.get("status") or "")
        ours, bounce = STATUSES.get(status, ("unknown", None))
        found = data.get("delivery_info")
        info: dict[str, Any] = found if isinstance(found, dict) else {}
        found = data.get("metadata")
        metadata: dict[str, Any] = found if isinstance(found, dict) else {}
        message_id = metadata.get(CORRELATION_KEY)
        when = _time(data.get("event_time"))
        return self.event(
            type=ours,
            recipient=data.get("email"),
            timestamp=when,
            message_id=message_id if isinstance(message_id, str) else None,
            provider_message_id=_text(data.get("job_id")),
            bounce=bounce,
            reason=_text(info.get("destination_response") or info.get("delivery_status")),
            event_id=stable_event_id(
                data.get("job_id"), data.get("email"), status, data.get("event_time")
            ),
            raw=raw,
        )


def json_body_or_refuse(request: WebhookRequest) -> Any:
    """The body for the signature check: unreadable is refused (nothing was verified)."""
    try:
        return json_body(request)
    except WebhookMalformed:
        raise WebhookRefused("the body is not JSON, so its auth field cannot be read") from None


def _time(value: Any) -> datetime:
    """``"2015-11-30 15:09:42"`` (UTC, as Unisender Go writes it)."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise WebhookMalformed("an event_time is missing or unreadable") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
