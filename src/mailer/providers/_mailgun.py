"""Mailgun: ``POST /v3/{domain}/messages`` as multipart form data, Basic ``api:KEY``.

Always multipart (fields as parts without a filename), so attachments and plain fields
travel the same way. Mailgun names an inline part's Content-ID after its filename, so an
inline attachment is sent with its content id as the filename. Metadata becomes Mailgun
user variables (``v:``), which come back in its webhooks; tags become ``o:tag``.

Errors: 401 and 403 (bad key, domain disabled, sandbox domain not allowed to send to this
address) -> AuthError; 404 on a send means the sending domain is not found (which Mailgun
says can be temporary) and 402 that a request valid in form failed for the account: both
are about the domain or account -> AuthError, fail over. 400 is about the message.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, quote

import httpx
from pydantic import SecretStr, field_validator

from .._errors import AuthError, DeliveryError
from .._message import Address, Attachment, Message
from .http import HTTPConfig, HTTPProvider, Payload, addresses_text, require

__all__ = ["MailgunConfig", "MailgunProvider"]

_REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
#: statuses that, on a send, concern the domain or account rather than the message
_ACCOUNT_STATUSES = {402: "request failed for the account", 404: "sending domain not found"}


class MailgunConfig(HTTPConfig):
    api_key: SecretStr
    domain: str
    region: Literal["us", "eu"] = "us"

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or "/" in value or any(c.isspace() for c in value):
            raise ValueError("domain must be a bare sending domain such as mg.example.com")
        return value


class MailgunProvider(HTTPProvider):
    """Mailgun's Messages API (US or EU region)."""

    Config: ClassVar[type[MailgunConfig]] = MailgunConfig
    config: MailgunConfig
    default_base_url = _REGIONS["us"]
    response_id_field = "id"
    max_tags = 3
    max_message_bytes = 25_000_000  # "The maximum message size Mailgun supports is 25MB"

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``mailgun://API_KEY:DOMAIN@default?region=eu`` (the form Symfony Mailer uses)."""
        key, domain = cls.url_credentials(url)
        require(bool(key) and bool(domain),
                "mailgun URL needs key and domain: mailgun://API_KEY:DOMAIN@default")  # fmt: skip
        return {**params, **cls.url_base(url), "api_key": key, "domain": domain}

    @property
    def base_url(self) -> str:
        return self.config.base_url or _REGIONS[self.config.region]

    def send_target(self) -> str:
        return f"/v3/{quote(self.config.domain, safe='')}/messages"

    def verify_target(self) -> str:
        return f"/v3/domains/{quote(self.config.domain, safe='')}"

    def auth(self) -> httpx.Auth:
        return httpx.BasicAuth("api", self.config.api_key.get_secret_value())

    def set_from(self, payload: Payload, sender: Address) -> None:
        payload.add_field("from", str(sender))

    def set_subject(self, payload: Payload, subject: str) -> None:
        payload.add_field("subject", subject)

    def add_recipients(self, payload: Payload, kind: str, addresses: list[Address]) -> None:
        for addr in addresses:
            payload.add_field(kind, str(addr))

    def set_reply_to(self, payload: Payload, reply_to: list[Address]) -> None:
        payload.add_field("h:Reply-To", addresses_text(reply_to))

    def set_body(self, payload: Payload, text: str | None, html: str | None) -> None:
        if text is not None:
            payload.add_field("text", text)
        if html is not None:
            payload.add_field("html", html)

    def set_headers(self, payload: Payload, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            payload.add_field(f"h:{name}", value)

    def add_attachment(self, payload: Payload, attachment: Attachment) -> None:
        payload.parts.append(
            ("attachment", (attachment.filename, attachment.data(), attachment.mime_type()))
        )

    def add_inline(self, payload: Payload, attachment: Attachment) -> None:
        payload.parts.append(
            ("inline", (attachment.content_id, attachment.data(), attachment.mime_type()))
        )

    def set_tags(self, payload: Payload, tags: list[str]) -> None:
        for tag in tags:
            payload.add_field("o:tag", tag)

    def set_metadata(self, payload: Payload, metadata: dict[str, str]) -> None:
        for key, value in metadata.items():
            payload.add_field(f"v:{key}", value)

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        why = _ACCOUNT_STATUSES.get(response.status_code)
        if why is not None and message is not None:
            return AuthError(f"Mailgun HTTP {response.status_code} ({why}): {text}")
        return None
