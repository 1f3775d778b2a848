"""Resend: ``POST /emails`` with a Bearer API key and an ``Idempotency-Key``.

The key is derived from the Message-ID alone, so every attempt at one message (a retry
after a timeout, a retry by the Mailer after DeliveryUncertain) carries the same key and
Resend delivers it at most once within its 24-hour idempotency window. That is why this
provider declares ``idempotent = True``. The request body is built only from the message
(no timestamps), because Resend refuses a reused key with a different payload.

Resend tags are name/value pairs limited to ASCII letters, digits, ``_`` and ``-``:
metadata maps to them directly, and a plain tag ``t`` becomes ``{"name": t, "value":
"true"}``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from ..errors import DeliveryError, DeliveryUncertain
from ..message import Message
from ..result import SendResult
from .http import HTTPConfig, HTTPProvider, HTTPRequest, b64, unique_recipients

__all__ = ["ResendConfig", "ResendProvider", "idempotency_key"]

_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class ResendConfig(HTTPConfig):
    api_key: SecretStr


def idempotency_key(message: Message) -> str:
    """The same key for every attempt at ``message``; does not reveal the Message-ID."""
    assert message.message_id is not None
    digest = hashlib.sha256(message.message_id.encode("ascii")).hexdigest()
    return f"mailer-{digest}"


class ResendProvider(HTTPProvider):
    """Resend's Emails API."""

    Config: ClassVar[type[ResendConfig]] = ResendConfig
    config: ResendConfig
    idempotent = True
    default_base_url = "https://api.resend.com"
    dsn_key_field = "api_key"
    verify_path = "/domains"
    rate_limit_reset_headers = ("ratelimit-reset",)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        to, cc, bcc = unique_recipients(message)
        body: dict[str, Any] = {"from": str(message.sender), "subject": message.subject}
        for key, group in (("to", to), ("cc", cc), ("bcc", bcc)):
            if group:
                body[key] = [str(a) for a in group]
        if message.reply_to:
            body["reply_to"] = [str(a) for a in message.reply_to]
        if message.text is not None or message.html is None:
            body["text"] = message.text or ""
        if message.html is not None:
            body["html"] = message.html
        body["headers"] = {**message.headers, "Message-ID": message.message_id}
        if message.attachments:
            atts = []
            for att in message.attachments:
                item = {"filename": att.filename, "content": b64(att.data()),
                        "content_type": att.content_type}  # fmt: skip
                if att.inline:
                    item["content_id"] = att.content_id
                atts.append(item)
            body["attachments"] = atts
        tags = [{"name": t, "value": "true"} for t in message.tags]
        tags += [{"name": k, "value": v} for k, v in message.metadata.items()]
        valid = [t for t in tags if _TAG.match(t["name"]) and _TAG.match(t["value"])]
        if len(valid) < len(tags):
            bad = next(t["name"] for t in tags if t not in valid)
            self.unsupported(f"tag or metadata {bad!r} (Resend tags allow only A-Z a-z 0-9 _ -)")
            tags = valid
        if tags:
            body["tags"] = tags
        headers = {"Idempotency-Key": idempotency_key(message)}
        return HTTPRequest("POST", "/emails", json=body, headers=headers)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        msg_id = data.get("id") if isinstance(data, dict) else None
        return self.result(message, response, provider_message_id=msg_id)

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        data = self.json_body(response)
        name = data.get("name") if isinstance(data, dict) else None
        if response.status_code == 409 and name == "concurrent_idempotent_requests":
            # an earlier attempt with this key is still running and may deliver
            return DeliveryUncertain(f"Resend {name}: {text}")
        return None

    async def verify(self) -> None:
        """GET /domains; a sending-only key is refused there, yet it is a valid key."""
        response = await self.request(HTTPRequest("GET", "/domains"))
        if response.is_success:
            return
        data = self.json_body(response)
        if isinstance(data, dict) and data.get("name") == "restricted_api_key":
            return
        raise self.error_for(response)
