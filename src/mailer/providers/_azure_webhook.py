"""Azure Communication Services email events, delivered by Event Grid to a webhook.

Event Grid posts a JSON array of events (its own schema; a CloudEvents 1.0 object or
batch is read too, ``type``/``time`` for ``eventType``/``eventTime``). Two kinds matter:

- ``Microsoft.EventGrid.SubscriptionValidationEvent``: sent once when the subscription
  is made. Event Grid enables the subscription only if the endpoint answers 200 with
  ``{"validationResponse": <data.validationCode>}``; :meth:`AzureWebhook.handshake`
  builds that body (the handler answers it as is and stores nothing). A subscription
  with the CloudEvents 1.0 schema is validated instead by CloudEvents' abuse
  protection: an HTTP OPTIONS with ``WebHook-Request-Origin: eventgrid.azure.net``,
  answered 200 with ``WebHook-Allowed-Origin`` (``preflight_origins``; the handler).
- ``Microsoft.Communication.EmailDeliveryReportReceived`` (``data.status``: Delivered,
  Bounced, Failed, Suppressed, Quarantined, FilteredSpam, Expanded) and
  ``...EmailEngagementTrackingReportReceived`` (``engagementType`` view or click).
  ``data.messageId`` is the operation id, which the send recorded as its
  ``provider_message_id`` (the ``Operation-Id`` we chose), so ingest finds the message.

Authentication. Event Grid signs nothing. Its documented choices for a webhook are a
secret in the URL's query (``https://host/hooks/azure?code=SECRET``, kept secret by Event
Grid) or a Microsoft Entra ID bearer token. We check the first: ``webhook.secret`` must
equal the query parameter ``webhook.parameter`` (``code``), compared in constant time;
the validation handshake comes through the same URL, so it is checked too and an
endpoint without the secret never enables a subscription. Entra ID tokens are not
checked (their keys come from Microsoft's tenant, nothing a local test can stand in for
honestly): docs/events.md says so. With no signature there is no body integrity and no
signed timestamp: a replayed post with the secret is accepted, and its events are
duplicates by their Event Grid ``id`` (stored once). The secret is the whole defence, so
use HTTPS.

Mapping: Delivered -> delivered; Bounced -> bounced (hard); Failed -> bounced (soft:
Azure does not say the address is bad, so it does not suppress); Suppressed,
Quarantined, FilteredSpam -> rejected; Expanded (a distribution list) -> unknown.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from .._events.model import DeliveryEvent
from .._redact import register_secret
from .http.webhook import (
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    event_time,
    json_body,
    nonempty_text,
)

__all__ = ["DELIVERY_STATUSES", "AzureWebhook", "AzureWebhookConfig"]

VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
DELIVERY_REPORT = "Microsoft.Communication.EmailDeliveryReportReceived"
ENGAGEMENT = "Microsoft.Communication.EmailEngagementTrackingReportReceived"

#: a delivery report's ``data.status`` -> our type and bounce kind (docs/events.md)
DELIVERY_STATUSES: dict[str, tuple[str, str | None]] = {
    "Delivered": ("delivered", None), "Bounced": ("bounced", "hard"),
    "Failed": ("bounced", "soft"), "Suppressed": ("rejected", None),
    "Quarantined": ("rejected", None), "FilteredSpam": ("rejected", None),
    "Expanded": ("unknown", None),
}  # fmt: skip
_ENGAGEMENTS = {"view": "opened", "click": "clicked"}


class AzureWebhookConfig(WebhookConfig):
    """The secret Event Grid sends in the webhook URL's query string."""

    #: the value of the query parameter in the subscription's endpoint URL
    secret: SecretStr = Field(min_length=16)
    #: the query parameter's name
    parameter: str = Field(default="code", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("secret")
    @classmethod
    def _redacted(cls, value: SecretStr) -> SecretStr:
        """The secret travels in a URL, which servers and proxies log: redacted from
        every text of ours from now on."""
        register_secret(value)
        return value


class AzureWebhook(WebhookParser[AzureWebhookConfig]):
    Config: ClassVar[type[WebhookConfig]] = AzureWebhookConfig
    #: a subscription with the CloudEvents 1.0 schema is validated by an OPTIONS from
    #: Event Grid (CloudEvents' abuse protection) instead of the validation event
    preflight_origins: ClassVar[frozenset[str]] = frozenset({"eventgrid.azure.net"})

    async def verify(self, request: WebhookRequest) -> None:
        given = request.query.get(self.config.parameter)
        if not given:
            raise WebhookRefused(
                f"no ?{self.config.parameter}= secret in the URL (put webhook.secret in the "
                "Event Grid subscription's endpoint URL)"
            )
        expected = self.config.secret.get_secret_value()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise WebhookRefused(f"the ?{self.config.parameter}= secret does not match")

    async def handshake(self, request: WebhookRequest) -> dict[str, Any] | None:
        """Event Grid's subscription validation: echo ``validationCode``."""
        for item in _events(request):
            if _type(item) == VALIDATION:
                code = nonempty_text(_object(item.get("data")).get("validationCode"))
                if code is None:
                    raise WebhookMalformed("the validation event has no validationCode")
                return {"validationResponse": code}
        return None

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        found: list[DeliveryEvent] = []
        for item in _events(request):
            kind = _type(item)
            if kind == DELIVERY_REPORT:
                found.append(self._delivery(item))
            elif kind == ENGAGEMENT:
                found.append(self._engagement(item))
            # anything else (SubscriptionDeletedEvent, other ACS events): nothing to store
        return found

    def _delivery(self, item: dict[str, Any]) -> DeliveryEvent:
        data = _object(item.get("data"))
        status = data.get("status")
        ours, bounce = DELIVERY_STATUSES.get(str(status), ("unknown", None))
        details = _object(data.get("deliveryStatusDetails"))
        return self.event(
            type=ours,
            recipient=data.get("recipient"),
            timestamp=event_time(data.get("deliveryAttemptTimeStamp") or _time(item)),
            provider_message_id=nonempty_text(data.get("messageId")),
            bounce=bounce,
            reason=nonempty_text(details.get("statusMessage")),
            event_id=nonempty_text(item.get("id")),
            raw=item,
        )

    def _engagement(self, item: dict[str, Any]) -> DeliveryEvent:
        data = _object(item.get("data"))
        return self.event(
            type=_ENGAGEMENTS.get(str(data.get("engagementType")).lower(), "unknown"),
            recipient=data.get("recipient"),
            timestamp=event_time(data.get("userActionTimeStamp") or _time(item)),
            provider_message_id=nonempty_text(data.get("messageId")),
            event_id=nonempty_text(item.get("id")),
            raw=item,
        )


def _events(request: WebhookRequest) -> list[dict[str, Any]]:
    body = json_body(request)
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise WebhookMalformed("an Event Grid post is an array of event objects")
    return items


def _type(item: dict[str, Any]) -> Any:
    return item.get("eventType") or item.get("type")


def _time(item: dict[str, Any]) -> Any:
    return item.get("eventTime") or item.get("time")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
