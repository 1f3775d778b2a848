"""Brevo (formerly Sendinblue) provider for mailer-failover: ``POST /v3/smtp/email``.

Installed on its own (``pip install mailer-brevo``) and found by the Mailer through the
``mailer.providers`` entry point, the way any third-party provider is.

Brevo authenticates with an ``api-key`` header and reports its rate-limit reset, in
seconds, in ``x-sib-ratelimit-reset``. It has tags but no metadata field: metadata goes
in the ``X-Mailin-custom`` header as JSON, which Brevo returns in its webhooks. It takes a
single reply-to address and has no inline (content-id) attachments.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from mailer.message import Message
from mailer.providers.http import (
    HTTPConfig,
    HTTPProvider,
    HTTPRequest,
    address_dict,
    b64,
    unique_recipients,
)
from mailer.result import SendResult

__all__ = ["BrevoConfig", "BrevoProvider"]
#: one version source: mailer-failover's (see this package's pyproject)
__version__ = importlib.metadata.version("mailer-brevo")


class BrevoConfig(HTTPConfig):
    api_key: SecretStr


class BrevoProvider(HTTPProvider):
    """Brevo's transactional email API."""

    Config: ClassVar[type[BrevoConfig]] = BrevoConfig
    config: BrevoConfig
    default_base_url = "https://api.brevo.com"
    dsn_key_field = "api_key"
    verify_path = "/v3/account"
    rate_limit_reset_headers = ("x-sib-ratelimit-reset",)

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.api_key.get_secret_value()}

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        to, cc, bcc = unique_recipients(message)
        body: dict[str, Any] = {"sender": address_dict(message.sender), "subject": message.subject}
        for key, group in (("to", to), ("cc", cc), ("bcc", bcc)):
            if group:
                body[key] = [address_dict(a) for a in group]
        if message.reply_to:
            if len(message.reply_to) > 1:
                self.unsupported("more than one reply-to address")
            body["replyTo"] = address_dict(message.reply_to[0])
        if message.html is not None:
            body["htmlContent"] = message.html
        if message.text is not None or message.html is None:
            body["textContent"] = message.text or ""
        headers = dict(message.headers)
        if message.metadata:
            headers["X-Mailin-custom"] = json.dumps(message.metadata, separators=(",", ":"))
        if headers:
            body["headers"] = headers
        attachments = []
        for att in message.attachments:
            if att.inline:
                self.unsupported("inline attachments (content-id images)")
                continue
            attachments.append({"name": att.filename, "content": b64(att.data())})
        if attachments:
            body["attachment"] = attachments
        if message.tags:
            body["tags"] = list(message.tags)
        return HTTPRequest("POST", "/v3/smtp/email", json=body)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        msg_id = data.get("messageId") if isinstance(data, dict) else None
        return self.result(message, response, provider_message_id=msg_id)
