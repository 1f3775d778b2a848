"""Resend: ``POST /emails`` (``/emails/batch`` for 100 at once), Bearer key, Idempotency-Key.

The key is derived from the Message-ID alone, so every attempt at one message (a retry
after a timeout, a retry by the Mailer after DeliveryUncertain) carries the same key and
Resend delivers it at most once within its 24-hour idempotency window. That is why this
provider declares ``idempotent = True``. The request body is built only from the message
(no timestamps), because Resend refuses a reused key with a different payload. A batch
carries its own key, derived from its messages' ids, so a batch re-sent after an
ambiguous failure cannot deliver twice either.

Resend tags are name/value pairs limited to ASCII letters, digits, ``_`` and ``-``:
metadata maps to them directly, and a plain tag ``t`` becomes ``{"name": t, "value":
"true"}``.

Quota: Resend answers 429 ``daily_quota_exceeded`` ("wait until 24 hours have passed")
and ``monthly_quota_exceeded`` (until the plan's cycle renews or the plan changes). Both
rest the provider for :data:`QUOTA_REST` (a day, or longer if Resend says so): another
provider sends meanwhile, and one probe a day finds the quota back.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar

from pydantic import SecretStr

from .._errors import DeliveryError, DeliveryUncertain, RateLimited
from .._message import Message
from ._resend_lookup import find
from ._resend_webhook import ResendWebhook, ResendWebhookConfig
from .http import Answer, BatchOutcome, HTTPConfig, HTTPProvider, HTTPRequest, Payload
from .http.correlation import tag_safe
from .http.lookup import Lookup

__all__ = ["QUOTA_REST", "ResendConfig", "ResendProvider", "idempotency_key"]

_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: seconds a quota 429 rests Resend: its daily quota is a rolling 24 hours
QUOTA_REST = 24 * 3600.0
_QUOTAS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})


class ResendConfig(HTTPConfig):
    api_key: SecretStr
    #: the webhook receiver's secret (docs/events.md)
    webhook: ResendWebhookConfig | None = None


def idempotency_key(message: Message) -> str:
    """The same key for every attempt at ``message``; does not reveal the Message-ID."""
    assert message.message_id is not None
    digest = hashlib.sha256(message.message_id.encode("ascii")).hexdigest()
    return f"mailer-{digest}"


def batch_idempotency_key(messages: list[Message]) -> str:
    """The same key for every attempt at one batch (the same messages, in order)."""
    digest = hashlib.sha256("\n".join(m.message_id or "" for m in messages).encode()).hexdigest()
    return f"mailer-batch-{digest}"


class ResendPayload(Payload["ResendProvider"]):
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "reply_to": "reply_to", "text": "text", "html": "html", "headers": "headers",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "filename", "content": "content",
        "type": "content_type", "content_id": "content_id",
    }  # fmt: skip

    def _add_tags(self, pairs: list[tuple[str, str]]) -> None:
        for name, value in pairs:
            if _TAG.match(name) and _TAG.match(value):
                self.data.setdefault("tags", []).append({"name": name, "value": value})
            else:
                self.unsupported(
                    f"tag or metadata {name!r} (Resend tags allow only A-Z a-z 0-9 _ -)"
                )

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        # Resend's template variables are strings or numbers, and at most 50 of them
        if len(data) > 50:
            self.refuse(f"takes at most 50 template variables, and this message has {len(data)}")
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                self.refuse(
                    f"takes template variables that are strings or numbers, and {key!r} is "
                    f"a {type(value).__name__}"
                )

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        self.data["template"] = {"id": template_id, "variables": data}

    def set_tags(self, tags: list[str]) -> None:
        self._add_tags([(t, "true") for t in tags])

    def set_metadata(self, metadata: dict[str, str]) -> None:
        self._add_tags(list(metadata.items()))

    def correlation_value(self, message_id: str) -> str:
        return tag_safe(message_id)  # tag values allow only A-Z a-z 0-9 _ -

    def request(self) -> HTTPRequest:
        self.headers["Idempotency-Key"] = idempotency_key(self.message)
        return super().request()


class ResendProvider(HTTPProvider[ResendConfig]):
    """Resend's Emails API."""

    Config: ClassVar[type[ResendConfig]] = ResendConfig
    payload_class = ResendPayload
    webhook_parser = ResendWebhook
    idempotent = True
    idempotency_window = 24 * 3600.0  # "Idempotency keys expire after 24 hours"
    default_base_url = "https://api.resend.com"
    send_path = "/emails"
    dsn_key_field = "api_key"
    key_header = "Authorization"
    key_prefix = "Bearer "
    response_id_field = "id"
    verify_path = "/domains"
    rate_limit_reset_headers = ("ratelimit-reset",)
    batch_size = 100
    max_message_bytes = 40_000_000  # "up to 40MB" with attachments base64-encoded

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        name = answer.get("name")
        if answer.status == 409 and name == "concurrent_idempotent_requests":
            # an earlier attempt with this key is still running and may deliver
            return DeliveryUncertain(f"Resend {name}: {text}")
        if answer.status == 429 and name in _QUOTAS:
            rest = max(self.retry_after(answer) or 0.0, QUOTA_REST)
            return RateLimited(
                f"Resend {name} (resting {rest / 3600:.0f} h): {text}", retry_after=rest
            )
        return None

    def verify_accepts(self, answer: Answer) -> bool:
        """GET /domains; a sending-only key is refused there, yet it is a valid key."""
        return answer.is_success or answer.get("name") == "restricted_api_key"

    async def lookup(
        self,
        message_id: str,
        *,
        age: float,
        created: float | None = None,
        message: Message | None = None,
    ) -> Lookup:
        """Resend cannot be searched by our key: its email list is compared with the
        message's content instead (:mod:`mailer.providers._resend_lookup`)."""
        return await find(self, age=age, created=created, message=message)

    # -- /emails/batch: up to 100, permissive (each item its own result), idempotent ----

    def batchable(self, message: Message) -> bool:
        return not message.attachments  # the batch endpoint takes no attachments

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        headers = {
            "Idempotency-Key": batch_idempotency_key([p.message for p in payloads]),
            "x-batch-validation": "permissive",
        }
        return HTTPRequest(
            "POST", "/emails/batch", json=[p.data for p in payloads], headers=headers
        )

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        failed: dict[int, Any] = {}
        for item in answer.get("errors") or []:
            if isinstance(item, dict) and isinstance(item.get("index"), int):
                failed[item["index"]] = item
        created = [d for d in answer.get("data") or [] if isinstance(d, dict)]
        if len(created) != len(messages) - len(failed):
            text = f"batch answer does not match its items: {self.body(answer)}"
            return self.uncertain(text, len(messages))
        ids = iter(created)
        out: list[BatchOutcome] = []
        for index, message in enumerate(messages):
            if index in failed:
                item = {"name": "validation_error", **failed[index]}
                out.append(self.item_error(422, item, message))
            else:
                item = next(ids)
                out.append(
                    self.result(message, Answer.item(200, item), provider_message_id=item.get("id"))
                )
        return out
