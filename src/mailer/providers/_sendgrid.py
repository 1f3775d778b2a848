"""SendGrid v3 Mail Send: ``POST /v3/mail/send``, a Bearer API key, 202 and X-Message-Id.

A stored template (the config's ``templates``: ``{"welcome": "d-..."}``, a dynamic
template) goes as ``template_id`` with the data in the personalization's
``dynamic_template_data``, and no ``content``/``subject`` (the template has them).

One personalization carries to/cc/bcc, so every recipient gets the same message (the
SMTP semantics); tags become ``categories`` and metadata ``custom_args``, which SendGrid
echoes back in its event webhooks.

Errors: 401 (bad key, or "Maximum credits exceeded") and 403 (the From address is not a
verified Sender Identity, or the key lacks the mail.send scope) are account-level ->
AuthError, fail over; 400 and 413 are about the message -> PermanentError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import SecretStr

from .._message import Address, Message
from . import _sendgrid_records as records
from ._sendgrid_webhook import SendGridWebhook, SendGridWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, Payload, address_dict
from .http.lookup import Lookup
from .http.suppressions import Listed

__all__ = ["SendGridConfig", "SendGridProvider"]


class SendGridConfig(HTTPConfig):
    api_key: SecretStr
    #: the Signed Event Webhook's verification key (docs/events.md)
    webhook: SendGridWebhookConfig | None = None


class SendGridPayload(Payload["SendGridProvider"]):
    address_fields = ("email", "name")
    max_tags = 10
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "headers": "headers", "tags": "categories",
        "metadata": "custom_args",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "filename", "content": "content", "type": "type",
        "disposition": "disposition", "content_id": "content_id",
    }  # fmt: skip

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        personalization: dict[str, Any] = self.data.setdefault("personalizations", [{}])[0]
        personalization[kind] = self.json_addresses(addresses)

    def set_reply_to(self, reply_to: list[Address]) -> None:
        if len(reply_to) == 1:
            self.data["reply_to"] = address_dict(reply_to[0])
        else:
            self.data["reply_to_list"] = self.json_addresses(reply_to)

    #: "The total collective size of your handlebar substitutions may not exceed 10,000
    #: bytes per personalization object" (SendGrid's dynamic template docs)
    max_template_data_bytes: ClassVar[int] = 10_000

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        if not template_id.startswith("d-"):
            self.refuse(
                f"sends dynamic templates only (ids start with 'd-'), and {template_id!r} "
                "is not one: legacy templates take no dynamic_template_data"
            )
        size = len(json.dumps(data, ensure_ascii=False).encode())
        if size > self.max_template_data_bytes:
            self.refuse(
                f"takes at most {self.max_template_data_bytes} bytes of dynamic_template_data "
                f"a message, and this one has {size}"
            )

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        self.data["template_id"] = template_id
        personalization: dict[str, Any] = self.data.setdefault("personalizations", [{}])[0]
        personalization["dynamic_template_data"] = data

    def set_body(self, text: str | None, html: str | None) -> None:
        # SendGrid requires text/plain before text/html, and at least one non-empty part
        content = self.data["content"] = []
        if text is not None:
            content.append({"type": "text/plain", "value": text or " "})
        if html is not None:
            content.append({"type": "text/html", "value": html})


class SendGridProvider(HTTPProvider[SendGridConfig]):
    """SendGrid's v3 Web API."""

    Config: ClassVar[type[SendGridConfig]] = SendGridConfig
    payload_class = SendGridPayload
    webhook_parser = SendGridWebhook
    default_base_url = "https://api.sendgrid.com"
    send_path = "/v3/mail/send"
    max_message_bytes = 30_000_000  # "The total message size should not exceed 30MB"
    verify_path = "/v3/scopes"
    dsn_key_field = "api_key"
    key_header = "Authorization"
    key_prefix = "Bearer "
    rate_limit_reset_headers = ("X-RateLimit-Reset",)

    def provider_id(self, answer: Answer) -> str | None:
        return answer.headers.get("X-Message-Id")

    async def lookup(
        self,
        message_id: str,
        *,
        age: float,
        created: float | None = None,
        message: Message | None = None,
    ) -> Lookup:
        """SendGrid's own record of the message (:mod:`mailer.providers._sendgrid_records`)."""
        return await records.lookup(self, message_id, age=age, created=created)

    def suppressions(self) -> AsyncIterator[list[Listed]]:
        """SendGrid's own suppression list (:mod:`mailer.providers._sendgrid_records`)."""
        return records.suppressions(self)
