"""Mailtrap's Sending API: ``POST /api/send`` (``/api/batch`` for 500 at once), Bearer token.

Three hosts, one request shape, chosen as the official SDK (``mailtrap`` 2.x) chooses:

* live transactional: ``send.api.mailtrap.io`` (the default);
* live bulk stream: ``bulk.api.mailtrap.io`` (``bulk = true``);
* sandbox (Email Testing): ``sandbox.api.mailtrap.io/api/send/{inbox_id}``
  (``sandbox = true`` with ``inbox_id``): the message lands in a test inbox, never in a
  real mailbox. Sandbox with bulk, an inbox without sandbox, or sandbox without an inbox
  are configuration errors, before any I/O.

Mapping: address objects, one reply-to, one tag as Mailtrap's ``category``, metadata as
``custom_variables`` (they come back in its webhooks), headers as an object.

Errors come as ``{"success": false, "errors": ["..."]}`` (the table is in
docs/providers.md): 401 bad token and 403 (account or domain not allowed to send) ->
AuthError; a 400 saying the sender's domain is not verified or not found -> AuthError
too (the account must act; another provider can send); other 400s are about the
message; 429 -> RateLimited with Retry-After.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator

from .._errors import AuthError, DeliveryError
from .._message import Message
from ._mailtrap_webhook import MailtrapWebhook, MailtrapWebhookConfig
from .http import Answer, BatchOutcome, HTTPConfig, HTTPProvider, HTTPRequest, Payload

__all__ = ["MailtrapConfig", "MailtrapProvider"]

_HOSTS = {
    "send": "https://send.api.mailtrap.io",
    "bulk": "https://bulk.api.mailtrap.io",
    "sandbox": "https://sandbox.api.mailtrap.io",
}
#: the general API (accounts, inboxes), where verify() reads
_GENERAL_HOST = "https://mailtrap.io"
#: a 400 about the sending domain (account-level: fail over), not about the message
_DOMAIN = re.compile(
    r"domain.*(not verified|not found|unverified|verify)|"
    r"sending.*domain.*(missing|not allowed)",
    re.I,
)


class MailtrapConfig(HTTPConfig):
    api_token: SecretStr
    #: Email Testing: deliver into the test inbox ``inbox_id`` instead of to recipients
    sandbox: bool = False
    inbox_id: int | None = Field(default=None, ge=1)
    #: the Bulk stream (promotional mail), on its own host
    bulk: bool = False
    #: the webhook's signing secret (docs/events.md)
    webhook: MailtrapWebhookConfig | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> MailtrapConfig:
        if self.sandbox and self.inbox_id is None:
            raise ValueError("sandbox = true needs inbox_id (the test inbox to deliver into)")
        if self.inbox_id is not None and not self.sandbox:
            raise ValueError("inbox_id is for the sandbox only: set sandbox = true, or drop it")
        if self.sandbox and self.bulk:
            raise ValueError("bulk and sandbox exclude each other")
        return self


class MailtrapPayload(Payload["MailtrapProvider"]):
    address_fields = ("email", "name")
    max_tags = 1
    max_reply_to = 1
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "reply_to": "reply_to", "text": "text", "html": "html", "headers": "headers",
        "tags": "category", "metadata": "custom_variables",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "filename", "content": "content", "type": "type",
        "disposition": "disposition", "content_id": "content_id",
    }  # fmt: skip


class MailtrapProvider(HTTPProvider[MailtrapConfig]):
    """Mailtrap's Email Sending API (live, bulk, or sandbox inbox)."""

    Config: ClassVar[type[MailtrapConfig]] = MailtrapConfig
    payload_class = MailtrapPayload
    webhook_parser = MailtrapWebhook
    default_base_url = _HOSTS["send"]
    dsn_key_field = "api_token"
    key_header = "Authorization"
    key_prefix = "Bearer "
    requires_to = True  # "to" is required by the API
    max_message_bytes = 10_000_000  # "max message size ... 10 MB" with attachments
    batch_size = 500  # "up to 500 messages per API call"
    batch_max_bytes = 50_000_000  # "up to 50 MB payload size, including attachments"

    @property
    def base_url(self) -> str:
        if self.config.base_url:
            return self.config.base_url
        mode = "sandbox" if self.config.sandbox else "bulk" if self.config.bulk else "send"
        return _HOSTS[mode]

    def _path(self, endpoint: str) -> str:
        inbox = self.config.inbox_id
        return f"/api/{endpoint}/{inbox}" if inbox is not None else f"/api/{endpoint}"

    def send_target(self) -> str:
        return self._path("send")

    def verify_target(self) -> str:
        """``GET /api/accounts``: Mailtrap's cheapest authenticated read. It lives on the
        general API host, not the sending one, unless ``base_url`` points elsewhere (a
        proxy or a local fake serves both)."""
        return "/api/accounts" if self.config.base_url else f"{_GENERAL_HOST}/api/accounts"

    def provider_id(self, answer: Answer) -> str | None:
        ids = answer.get("message_ids")
        return str(ids[0]) if isinstance(ids, list) and ids else None

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        if answer.status == 400 and _DOMAIN.search(text):
            return AuthError(f"Mailtrap sending domain refused: {text}")
        return None

    # -- /api/batch: up to 500, each answer item in order -----------------------------

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        return HTTPRequest(
            "POST", self._path("batch"), json={"requests": [p.request().json for p in payloads]}
        )

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        items = answer.get("responses")
        if not isinstance(items, list) or len(items) != len(messages):
            text = f"batch answer has no item per message: {self.body(answer)}"
            return self.uncertain(text, len(messages))
        out: list[BatchOutcome] = []
        for message, item in zip(messages, items, strict=True):
            item = item if isinstance(item, dict) else {}
            if item.get("success") is True:
                out.append(self.parse_success(message, Answer.item(200, item)))
            else:
                out.append(self.item_error(400, {"success": False, **item}, message))
        return out
