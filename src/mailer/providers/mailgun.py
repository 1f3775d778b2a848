"""Mailgun: ``POST /v3/{domain}/messages`` as multipart form data, Basic ``api:KEY``.

Always multipart (fields as parts without a filename), so attachments and plain fields
travel the same way. Mailgun names an inline part's Content-ID after its filename, so an
inline attachment is sent with its content id as the filename. Metadata becomes Mailgun
user variables (``v:``), which come back in its webhooks; tags become ``o:tag``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, quote

import httpx
from pydantic import SecretStr, field_validator

from ..message import Message
from ..result import SendResult
from .http import HTTPConfig, HTTPProvider, HTTPRequest, require, unique_recipients

__all__ = ["MailgunConfig", "MailgunProvider"]

_MAX_TAGS = 3
_REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


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

    def verify_target(self) -> str:
        return f"/v3/domains/{quote(self.config.domain, safe='')}"

    def auth(self) -> httpx.Auth:
        return httpx.BasicAuth("api", self.config.api_key.get_secret_value())

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        to, cc, bcc = unique_recipients(message)
        parts: list[tuple[str, tuple[Any, ...]]] = []

        def field(name: str, value: str) -> None:
            parts.append((name, (None, value)))

        field("from", str(message.sender))
        for name, group in (("to", to), ("cc", cc), ("bcc", bcc)):
            for addr in group:
                field(name, str(addr))
        field("subject", message.subject)
        if message.text is not None or message.html is None:
            field("text", message.text or "")
        if message.html is not None:
            field("html", message.html)
        if message.reply_to:
            field("h:Reply-To", ", ".join(str(a) for a in message.reply_to))
        field("h:Message-Id", message.message_id or "")
        for name, value in message.headers.items():
            field(f"h:{name}", value)
        tags = message.tags
        if len(tags) > _MAX_TAGS:
            self.unsupported(f"more than {_MAX_TAGS} tags")
            tags = tags[:_MAX_TAGS]
        for tag in tags:
            field("o:tag", tag)
        for key, value in message.metadata.items():
            field(f"v:{key}", value)
        for att in message.attachments:
            if att.inline:
                parts.append(("inline", (att.content_id, att.data(), att.content_type)))
            else:
                parts.append(("attachment", (att.filename, att.data(), att.content_type)))
        path = f"/v3/{quote(self.config.domain, safe='')}/messages"
        return HTTPRequest("POST", path, files=parts)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        msg_id = data.get("id") if isinstance(data, dict) else None
        return self.result(message, response, provider_message_id=msg_id)
