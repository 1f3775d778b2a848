"""SparkPost (Bird): ``POST /api/v1/transmissions``, the bare API key as Authorization.

One transmission per message, built the way the official SDK (python-sparkpost) builds
it, so a team moving from the SDK sends byte-for-byte the same request: each To address is
a recipient; Cc and Bcc recipients are copies whose ``header_to`` is the first To address
(so the To header every copy shows is the same), and Cc also goes in a ``CC`` header.
Tags go on every recipient (SparkPost's tags are per recipient and come back in its
events), metadata on the transmission. US (``api.sparkpost.com``) or EU
(``api.eu.sparkpost.com``) by ``region``; an enterprise endpoint by ``base_url``.

Errors come as ``{"errors": [{"message", "description", "code"}]}``; the extended code
says what happened (the table is in docs/providers.md):

* 401 bad key, 403 key without the Transmissions permission or account suspended ->
  AuthError (the status mapping): fail over.
* 420 with codes 2101-2104 (sandbox, hourly, daily, monthly sending limit) ->
  RateLimited resting for the period the limit counts.
* code 7001 (sending domain unconfigured or unverified) and 1903 (sending domain
  blocked) -> AuthError: the account must act, another provider can send.
* code 1902 (generation rejected) naming a suppression: every recipient was refused ->
  RecipientsRefused, no failover.

SparkPost has no batch form for different messages (a recipient list shares one
content), so ``send_many`` sends each message on its own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from .._errors import AuthError, DeliveryError, RateLimited, RecipientsRefused
from .._message import Address, Attachment, Message
from ._sparkpost_webhook import SparkPostWebhook
from .http import Answer, HTTPConfig, HTTPProvider, Payload, addresses_text, b64
from .http.webhook import BasicAuthWebhookConfig

__all__ = ["SparkPostConfig", "SparkPostProvider"]

_REGIONS = {"us": "https://api.sparkpost.com", "eu": "https://api.eu.sparkpost.com"}
#: 420 "Exceed Sending Limit" codes -> the seconds until the limit can have healed
_LIMITS = {"2101": 3600.0, "2102": 3600.0, "2103": 24 * 3600.0, "2104": 24 * 3600.0}
#: extended codes that say the sending domain or account, not the message, is refused
_ACCOUNT_CODES = {"7001": "sending domain not configured or verified",
                  "1903": "sending domain blocked"}  # fmt: skip


class SparkPostConfig(HTTPConfig):
    api_key: SecretStr
    region: Literal["us", "eu"] = "us"
    #: the event webhook's Basic credentials (docs/events.md)
    webhook: BasicAuthWebhookConfig | None = None


def _address(address: Address) -> dict[str, str]:
    out = {"email": address.email}
    if address.name:
        out["name"] = address.name
    return out


def header_to(address: Address) -> str:
    """The SDK's ``header_to``: ``"Name" <a@x>`` or the bare address (quotes escaped)."""
    if not address.name:
        return address.email
    name = address.name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{name}" <{address.email}>'


class SparkPostPayload(Payload["SparkPostProvider"]):
    def __init__(self, provider: SparkPostProvider, message: Message) -> None:
        super().__init__(provider, message)
        self.content: dict[str, Any] = {}
        self.data["content"] = self.content
        self.data["recipients"] = []
        self.first_to: Address | None = None

    def set_from(self, sender: Address) -> None:
        self.content["from"] = _address(sender)

    def set_subject(self, subject: str) -> None:
        self.content["subject"] = subject

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        recipients: list[dict[str, Any]] = self.data["recipients"]
        if kind == "to":
            self.first_to = addresses[0]
            recipients.extend({"address": _address(a)} for a in addresses)
            return
        if kind == "cc":
            self.content.setdefault("headers", {})["CC"] = ",".join(str(a) for a in addresses)
        assert self.first_to is not None  # the check refuses a message without To
        shown = header_to(self.first_to)
        recipients.extend({"address": {**_address(a), "header_to": shown}} for a in addresses)

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self.content["reply_to"] = addresses_text(reply_to)

    def set_body(self, text: str | None, html: str | None) -> None:
        if text is not None:
            self.content["text"] = text
        if html is not None:
            self.content["html"] = html

    def set_headers(self, headers: dict[str, str]) -> None:
        self.content.setdefault("headers", {}).update(headers)

    def _file(self, key: str, name: str, attachment: Attachment) -> None:
        item = {"type": attachment.mime_type(), "name": name, "data": b64(attachment.data())}
        self.content.setdefault(key, []).append(item)

    def add_attachment(self, attachment: Attachment) -> None:
        self._file("attachments", attachment.filename or "attachment", attachment)

    def add_inline(self, attachment: Attachment) -> None:
        # SparkPost names an inline image by its content id: <img src="cid:NAME">
        self._file("inline_images", attachment.content_id or "", attachment)

    def set_tags(self, tags: list[str]) -> None:
        for recipient in self.data["recipients"]:
            recipient["tags"] = list(tags)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        self.data["metadata"] = metadata


class SparkPostProvider(HTTPProvider[SparkPostConfig]):
    """SparkPost's Transmissions API (US or EU region)."""

    Config: ClassVar[type[SparkPostConfig]] = SparkPostConfig
    payload_class = SparkPostPayload
    webhook_parser = SparkPostWebhook
    default_base_url = _REGIONS["us"]
    send_path = "/api/v1/transmissions"
    verify_path = "/api/v1/account"
    dsn_key_field = "api_key"
    key_header = "Authorization"  # the bare key, no scheme, as SparkPost documents
    max_message_bytes = 20_000_000  # "maximum transmission size is 20 MB" with attachments

    @property
    def base_url(self) -> str:
        return self.config.base_url or _REGIONS[self.config.region]

    def provider_id(self, answer: Answer) -> str | None:
        results = answer.get("results")
        value = results.get("id") if isinstance(results, dict) else None
        return str(value) if value is not None else None

    def error_text(self, answer: Answer) -> str:
        errors = answer.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for item in errors:
                if isinstance(item, dict):
                    words = [str(item[k]) for k in ("message", "description") if item.get(k)]
                    code = f" (code {item['code']})" if item.get("code") else ""
                    parts.append(": ".join(words) + code)
            if parts:
                return "; ".join(parts)
        return super().error_text(answer)

    @staticmethod
    def _codes(answer: Answer) -> list[str]:
        errors = answer.get("errors")
        if not isinstance(errors, list):
            return []
        return [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        codes = self._codes(answer)
        if answer.status == 420 or any(code in _LIMITS for code in codes):
            rest = max([_LIMITS.get(code, 3600.0) for code in codes] or [3600.0])
            rest = max(rest, self.retry_after(answer) or 0.0)
            return RateLimited(
                f"SparkPost sending limit (resting {rest / 3600:.0f} h): {text}", retry_after=rest
            )
        for code in codes:
            if code in _ACCOUNT_CODES:
                return AuthError(f"SparkPost code {code} ({_ACCOUNT_CODES[code]}): {text}")
        if "1902" in codes and "suppress" in text.lower() and message is not None:
            refused = dict.fromkeys(message.envelope_recipients, text)
            return RecipientsRefused(f"SparkPost code 1902: {text}", refused=refused)
        return None
