"""SendGrid v3 Mail Send: ``POST /v3/mail/send``, a Bearer API key, 202 and X-Message-Id.

One personalization carries to/cc/bcc, so every recipient gets the same message (the
SMTP semantics); tags become ``categories`` and metadata ``custom_args``, which SendGrid
echoes back in its event webhooks.

Errors: 401 (bad key, or "Maximum credits exceeded") and 403 (the From address is not a
verified Sender Identity, or the key lacks the mail.send scope) are account-level ->
AuthError, fail over; 400 and 413 are about the message -> PermanentError.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from ..message import Address, Attachment
from .http import HTTPConfig, HTTPProvider, Payload, address_dict, b64

__all__ = ["SendGridConfig", "SendGridProvider"]


class SendGridConfig(HTTPConfig):
    api_key: SecretStr


class SendGridProvider(HTTPProvider):
    """SendGrid's v3 Web API."""

    Config: ClassVar[type[SendGridConfig]] = SendGridConfig
    config: SendGridConfig
    default_base_url = "https://api.sendgrid.com"
    send_path = "/v3/mail/send"
    verify_path = "/v3/scopes"
    dsn_key_field = "api_key"
    key_header = "Authorization"
    key_prefix = "Bearer "
    rate_limit_reset_headers = ("X-RateLimit-Reset",)
    max_tags = 10

    @staticmethod
    def _personalization(payload: Payload) -> dict[str, Any]:
        personalizations = payload.data.setdefault("personalizations", [{}])
        first: dict[str, Any] = personalizations[0]
        return first

    def set_from(self, payload: Payload, sender: Address) -> None:
        payload.data["from"] = address_dict(sender)

    def set_subject(self, payload: Payload, subject: str) -> None:
        payload.data["subject"] = subject

    def set_to(self, payload: Payload, to: list[Address]) -> None:
        self._personalization(payload)["to"] = [address_dict(a) for a in to]

    def set_cc(self, payload: Payload, cc: list[Address]) -> None:
        self._personalization(payload)["cc"] = [address_dict(a) for a in cc]

    def set_bcc(self, payload: Payload, bcc: list[Address]) -> None:
        self._personalization(payload)["bcc"] = [address_dict(a) for a in bcc]

    def set_reply_to(self, payload: Payload, reply_to: list[Address]) -> None:
        if len(reply_to) == 1:
            payload.data["reply_to"] = address_dict(reply_to[0])
        else:
            payload.data["reply_to_list"] = [address_dict(a) for a in reply_to]

    def set_body(self, payload: Payload, text: str | None, html: str | None) -> None:
        # SendGrid requires text/plain before text/html, and at least one non-empty part
        content = payload.data["content"] = []
        if text is not None:
            content.append({"type": "text/plain", "value": text or " "})
        if html is not None:
            content.append({"type": "text/html", "value": html})

    def set_headers(self, payload: Payload, headers: dict[str, str]) -> None:
        payload.data["headers"] = headers

    def _attach(self, payload: Payload, att: Attachment, disposition: str) -> dict[str, str]:
        item = {"content": b64(att.data()), "filename": att.filename or "",
                "type": att.content_type or "", "disposition": disposition}  # fmt: skip
        payload.data.setdefault("attachments", []).append(item)
        return item

    def add_attachment(self, payload: Payload, attachment: Attachment) -> None:
        self._attach(payload, attachment, "attachment")

    def add_inline(self, payload: Payload, attachment: Attachment) -> None:
        self._attach(payload, attachment, "inline")["content_id"] = attachment.content_id or ""

    def set_tags(self, payload: Payload, tags: list[str]) -> None:
        payload.data["categories"] = tags

    def set_metadata(self, payload: Payload, metadata: dict[str, str]) -> None:
        payload.data["custom_args"] = metadata

    def provider_id(self, response: httpx.Response) -> str | None:
        msg_id: str | None = response.headers.get("X-Message-Id")
        return msg_id
