"""Postmark: ``POST /email`` with the X-Postmark-Server-Token header.

Postmark reports errors as an ``ErrorCode`` in a JSON body (mostly with HTTP 422), so the
status alone does not say what happened:

* ErrorCode 406 (inactive recipient: hard bounce, complaint, suppression): nothing was
  sent -> :class:`RecipientsRefused` naming the addresses Postmark listed.
* ErrorCode 0 with "will not deliver to these inactive addresses": sent to the others ->
  success with those addresses in ``rejected``.
* ErrorCode 300 naming an invalid To/Cc/Bcc address -> RecipientsRefused.
* Account-level codes (bad token, sender signature missing or unconfirmed, sending not
  allowed, account pending) -> :class:`AuthError`: another provider can send the same
  message, and this one will not work until someone fixes the account.

Postmark takes a single tag per message.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from ..errors import AuthError, DeliveryError, RecipientsRefused
from ..message import Message
from ..result import SendResult
from .http import HTTPConfig, HTTPProvider, HTTPRequest, addresses_text, b64

__all__ = ["PostmarkConfig", "PostmarkProvider"]

#: ErrorCodes that say the account, not the message, is the problem
_ACCOUNT_ERRORS = {
    10: "bad or missing server token",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send (account)",
    412: "account pending approval",
}
_INACTIVE = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.S | re.I)
_INVALID = re.compile(r"^(?:Invalid|Error\s+parsing)\s+'(?:To|Cc|Bcc)'.*?'([^']+@[^']+)'",
                      re.S | re.I)  # fmt: skip


class PostmarkConfig(HTTPConfig):
    server_token: SecretStr
    message_stream: str | None = None


def _addresses(pattern: re.Pattern[str], text: str) -> list[str]:
    match = pattern.search(text)
    if not match:
        return []
    return [a.strip().lower() for a in match.group(1).split(",") if "@" in a]


class PostmarkProvider(HTTPProvider):
    """Postmark's Email API."""

    Config: ClassVar[type[PostmarkConfig]] = PostmarkConfig
    config: PostmarkConfig
    default_base_url = "https://api.postmarkapp.com"
    dsn_key_field = "server_token"
    verify_path = "/server"

    def auth_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.config.server_token.get_secret_value()}

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        body: dict[str, Any] = {"From": str(message.sender), "Subject": message.subject}
        for key, group in (("To", message.to), ("Cc", message.cc), ("Bcc", message.bcc)):
            if group:
                body[key] = addresses_text(group)
        if message.reply_to:
            body["ReplyTo"] = addresses_text(message.reply_to)
        if message.text is not None or message.html is None:
            body["TextBody"] = message.text or ""
        if message.html is not None:
            body["HtmlBody"] = message.html
        headers = {**message.headers, "Message-ID": message.message_id}
        body["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        if message.tags:
            if len(message.tags) > 1:
                self.unsupported("more than one tag")
            body["Tag"] = message.tags[0]
        if message.metadata:
            body["Metadata"] = dict(message.metadata)
        if message.attachments:
            atts = []
            for att in message.attachments:
                item = {"Name": att.filename, "Content": b64(att.data()),
                        "ContentType": att.content_type}  # fmt: skip
                if att.inline:
                    item["ContentID"] = f"cid:{att.content_id}"
                atts.append(item)
            body["Attachments"] = atts
        if self.config.message_stream:
            body["MessageStream"] = self.config.message_stream
        return HTTPRequest("POST", "/email", json=body)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        if not isinstance(data, dict):
            return self.result(message, response)
        text = str(data.get("Message", ""))
        rejected = {addr: text for addr in _addresses(_INACTIVE, text)}
        msg_id = data.get("MessageID")
        return self.result(message, response, provider_message_id=msg_id, rejected=rejected)

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        data = self.json_body(response)
        if not isinstance(data, dict):
            return None
        code = data.get("ErrorCode")
        where = f"Postmark ErrorCode {code}"
        if code == 406:
            refused = _addresses(_INACTIVE, text)
            if not refused and message is not None:
                refused = message.envelope_recipients
            return RecipientsRefused(f"{where}: {text}",
                                     refused=dict.fromkeys(refused, text))  # fmt: skip
        if code == 300:
            refused = _addresses(_INVALID, text)
            if refused:
                return RecipientsRefused(f"{where}: {text}",
                                         refused=dict.fromkeys(refused, text))  # fmt: skip
        if isinstance(code, int) and code in _ACCOUNT_ERRORS:
            return AuthError(f"{where} ({_ACCOUNT_ERRORS[code]}): {text}")
        return None
