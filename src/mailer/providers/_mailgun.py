"""Mailgun: ``POST /v3/{domain}/messages`` as multipart form data, Basic ``api:KEY``.

Always multipart (fields as parts without a filename), so attachments and plain fields
travel the same way. Mailgun names an inline part's Content-ID after its filename, so an
inline attachment is sent with its content id as the filename. Metadata becomes Mailgun
user variables (``v:``), which come back in its webhooks; tags become ``o:tag``.

A large message (a text, HTML or attachment of 1 MiB or more: the rendering streams it)
goes to ``messages.mime`` instead: the message as rendered, a ``message`` part of the
form, streamed with its length known (providers/http/body.py), and only the envelope
recipients (``to``, Bcc included), tags, variables and provider options as fields;
From, the subject, the bodies, headers and attachments are in the MIME. The same
request through ``messages`` would hold the whole form (every attachment read whole)
in memory.

Errors: 401 and 403 (bad key, domain disabled, sandbox domain not allowed to send to this
address) -> AuthError; 404 on a send means the sending domain is not found (which Mailgun
says can be temporary) and 402 that a request valid in form failed for the account: both
are about the domain or account -> AuthError, fail over. 400 is about the message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, quote

import httpx
from pydantic import SecretStr, field_validator

from .._errors import AuthError, DeliveryError
from .._message import Address, Attachment, Message
from .._message.mime import Rendering
from . import _mailgun_records as records
from ._mailgun_webhook import MailgunWebhook, MailgunWebhookConfig
from .http import (
    Answer,
    HTTPConfig,
    HTTPProvider,
    HTTPRequest,
    Payload,
    addresses_text,
    require,
)
from .http.body import StreamedBody, around, placeholder
from .http.lookup import Lookup
from .http.suppressions import Listed

__all__ = ["MailgunConfig", "MailgunProvider"]

_REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
#: statuses that, on a send, concern the domain or account rather than the message
_ACCOUNT_STATUSES = {402: "request failed for the account", 404: "sending domain not found"}


class MailgunConfig(HTTPConfig):
    api_key: SecretStr
    #: the webhook receiver's secret (docs/events.md)
    webhook: MailgunWebhookConfig | None = None
    domain: str
    region: Literal["us", "eu"] = "us"

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or "/" in value or any(c.isspace() for c in value):
            raise ValueError("domain must be a bare sending domain such as mg.example.com")
        return value


class MailgunPayload(Payload["MailgunProvider"]):
    max_tags = 3
    #: the rendering, when the message goes whole as MIME (``messages.mime``, streamed)
    mime: Rendering | None = None

    def walk(self) -> MailgunPayload:
        message = self.message
        rendered = message.render()
        if isinstance(rendered, Rendering) and (
            message.template is None or self.provider.template_id(message.template) is None
        ):
            self.mime = rendered
        super().walk()
        return self

    def set_from(self, sender: Address) -> None:
        if self.mime is None:  # else in the MIME, as the subject, bodies, headers, files
            self.add_field("from", str(sender))

    def set_subject(self, subject: str) -> None:
        if self.mime is None:
            self.add_field("subject", subject)

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        # messages.mime takes every envelope recipient as "to" (Bcc is not in the MIME)
        name = "to" if self.mime is not None else kind
        for addr in addresses:
            self.add_field(name, str(addr))

    def set_reply_to(self, reply_to: list[Address]) -> None:
        if self.mime is None:
            self.add_field("h:Reply-To", addresses_text(reply_to))

    def body_in_mime(self) -> bool:
        return self.mime is not None

    def set_body(self, text: str | None, html: str | None) -> None:
        if self.mime is not None:
            return
        if text is not None:
            self.add_field("text", text)
        if html is not None:
            self.add_field("html", html)

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        # the stored template's name, its variables as one JSON form field
        self.add_field("template", template_id)
        self.add_field("t:variables", json.dumps(data))

    def set_headers(self, headers: dict[str, str]) -> None:
        if self.mime is not None:
            return
        for name, value in headers.items():
            self.add_field(f"h:{name}", value)

    def add_attachment(self, attachment: Attachment) -> None:
        if self.mime is None:
            self.add_file("attachment", attachment.filename, attachment)

    def add_inline(self, attachment: Attachment) -> None:
        if self.mime is None:
            self.add_file("inline", attachment.content_id, attachment)

    def set_tags(self, tags: list[str]) -> None:
        for tag in tags:
            self.add_field("o:tag", tag)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        for key, value in metadata.items():
            self.add_field(f"v:{key}", value)

    def request(self) -> HTTPRequest:
        request = super().request()
        rendering = self.mime
        if rendering is None:
            return request
        # the form httpx makes with a placeholder for the message, split around it
        mark = placeholder()
        form = [*self.parts, ("message", ("message.mime", mark.encode(), "message/rfc822"))]
        whole = httpx.Request("POST", "https://mailgun.invalid", files=form)
        head, tail = around(whole, mark)
        request.body = StreamedBody(
            head, rendering.chunks, rendering.size, tail, whole.headers["Content-Type"]
        )
        request.files = None
        request.path = self.provider.send_target() + ".mime"
        return request


class MailgunProvider(HTTPProvider[MailgunConfig]):
    """Mailgun's Messages API (US or EU region)."""

    Config: ClassVar[type[MailgunConfig]] = MailgunConfig
    payload_class = MailgunPayload
    webhook_parser = MailgunWebhook
    default_base_url = _REGIONS["us"]
    response_id_field = "id"
    max_message_bytes = 25_000_000  # "The maximum message size Mailgun supports is 25MB"

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``mailgun://API_KEY:DOMAIN@default?region=eu`` (the form Symfony Mailer uses)."""
        key, domain = cls.url_credentials(url)
        require(
            bool(key) and bool(domain),
            "mailgun URL needs key and domain: mailgun://API_KEY:DOMAIN@default",
        )
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

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        why = _ACCOUNT_STATUSES.get(answer.status)
        if why is not None and message is not None:
            return AuthError(f"Mailgun HTTP {answer.status} ({why}): {text}")
        return None

    async def lookup(
        self,
        message_id: str,
        *,
        age: float,
        created: float | None = None,
        message: Message | None = None,
    ) -> Lookup:
        """Mailgun's own record of the message (:mod:`mailer.providers._mailgun_records`)."""
        return await records.lookup(self, message_id, age=age, created=created)

    def suppressions(self) -> AsyncIterator[list[Listed]]:
        """Mailgun's own suppression list (:mod:`mailer.providers._mailgun_records`)."""
        return records.suppressions(self)
