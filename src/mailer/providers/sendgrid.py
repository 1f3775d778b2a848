"""SendGrid v3 Mail Send: ``POST /v3/mail/send``, a Bearer API key, 202 and X-Message-Id.

One personalization carries to/cc/bcc, so every recipient gets the same message (the
SMTP semantics); tags become ``categories`` and metadata ``custom_args``, which SendGrid
echoes back in its event webhooks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from ..errors import MessageError
from ..message import Message
from ..result import SendResult
from .http import HTTPConfig, HTTPProvider, HTTPRequest, address_dict, b64, unique_recipients

__all__ = ["SendGridConfig", "SendGridProvider"]

_MAX_CATEGORIES = 10


class SendGridConfig(HTTPConfig):
    api_key: SecretStr


class SendGridProvider(HTTPProvider):
    """SendGrid's v3 Web API."""

    Config: ClassVar[type[SendGridConfig]] = SendGridConfig
    config: SendGridConfig
    default_base_url = "https://api.sendgrid.com"
    verify_path = "/v3/scopes"
    dsn_key_field = "api_key"
    rate_limit_reset_headers = ("X-RateLimit-Reset",)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        to, cc, bcc = unique_recipients(message)
        if not to:
            # SendGrid requires personalizations[].to; no option can work around it
            raise MessageError(f"provider {self.name!r} (SendGrid) needs at least one To recipient")
        personalization: dict[str, Any] = {"to": [address_dict(a) for a in to]}
        if cc:
            personalization["cc"] = [address_dict(a) for a in cc]
        if bcc:
            personalization["bcc"] = [address_dict(a) for a in bcc]
        content = []
        # SendGrid requires text/plain before text/html, and at least one non-empty part
        if message.text is not None or message.html is None:
            content.append({"type": "text/plain", "value": message.text or " "})
        if message.html is not None:
            content.append({"type": "text/html", "value": message.html})
        body: dict[str, Any] = {
            "personalizations": [personalization],
            "from": address_dict(message.sender),
            "subject": message.subject,
            "content": content,
            "headers": {**message.headers, "Message-ID": message.message_id},
        }
        if len(message.reply_to) == 1:
            body["reply_to"] = address_dict(message.reply_to[0])
        elif message.reply_to:
            body["reply_to_list"] = [address_dict(a) for a in message.reply_to]
        if message.attachments:
            atts = []
            for att in message.attachments:
                item = {
                    "content": b64(att.data()),
                    "filename": att.filename,
                    "type": att.content_type,
                    "disposition": "inline" if att.inline else "attachment",
                }
                if att.inline:
                    item["content_id"] = att.content_id
                atts.append(item)
            body["attachments"] = atts
        if message.tags:
            tags = message.tags
            if len(tags) > _MAX_CATEGORIES:
                self.unsupported(f"more than {_MAX_CATEGORIES} tags (categories)")
                tags = tags[:_MAX_CATEGORIES]
            body["categories"] = tags
        if message.metadata:
            body["custom_args"] = dict(message.metadata)
        return HTTPRequest("POST", "/v3/mail/send", json=body)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        return self.result(
            message, response, provider_message_id=response.headers.get("X-Message-Id")
        )
