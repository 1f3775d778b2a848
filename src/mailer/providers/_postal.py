"""Postal (self-hosted): ``POST {host}/api/v1/send/message``, ``X-Server-API-Key``.

Postal has no public host: ``base_url`` (or the DSN's host) names the user's own
installation, and is required. The key is a server's API credential.

Postal's legacy API answers **HTTP 200 to everything it understood**, errors included:
``{"status": "error", "data": {"code": "...", "message": "..."}}`` (or ``"parameter-error"``
for a malformed body), so an answer is read by its ``status`` field, not its HTTP status
(the table is in docs/providers.md):

* ``AccessDenied``, ``InvalidServerAPIKey`` (the key is echoed back: it is redacted),
  ``ServerSuspended``, ``UnauthenticatedFromAddress`` (the From domain is not one of the
  server's): about the server -> :class:`AuthError`, fail over;
* ``ValidationError``, ``NoRecipients``, ``NoContent``, ``TooMany*Addresses``,
  ``FromAddressMissing``, ``Attachment*``, a parameter error: about this message ->
  :class:`PermanentError`;
* a 200 that is neither success nor a Postal error (a proxy's page): the request reached
  something that may have forwarded it -> :class:`DeliveryUncertain`.

What Postal's ``send/message`` takes: one tag, one reply-to, attachments without a
Content-ID (no inline images: its issue #731), no metadata. It builds the MIME itself and
sets its own Message-ID after any custom header, so ours cannot go out: the result's
``provider_message_id`` is Postal's (``data.message_id``), the id its webhooks carry.

``endpoint = "raw"`` sends through ``send/raw`` instead: our own rendered MIME (base64
``data``) with the envelope (``mail_from``, ``rcpt_to``), so the message goes out as the
SMTP provider would send it, our Message-ID, inline images and non-ASCII headers
included; only tags and metadata, which have no place in the raw form, are refused. A
large message (one the renderer streams) goes as a streamed body, its base64 made chunk by
chunk inside httpx's own JSON, as SES's raw path does (:mod:`.http.body`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import httpx
from pydantic import SecretStr

from .._errors import AuthError, DeliveryError, DeliveryUncertain, PermanentError
from .._message import Address, Attachment, Message
from .._message.stream import Rendering
from .._result import SendResult
from ._postal_webhook import PostalWebhook, PostalWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, b64
from .http.body import StreamedBody, around, base64_chunks, base64_size, placeholder

__all__ = ["PostalConfig", "PostalProvider"]

#: Postal's error codes that say the server or its domain, not the message, is refused
_ACCOUNT_CODES = {
    "AccessDenied": "no server API key",
    "InvalidServerAPIKey": "the server API key is not valid",
    "ServerSuspended": "the mail server is suspended",
    "UnauthenticatedFromAddress": "the From domain is not authenticated for this server",
}
#: Postal refuses more than this many addresses in each of to, cc and bcc
MAX_ADDRESSES = 50


class PostalConfig(HTTPConfig):
    """``base_url`` is the Postal installation (``https://postal.example.com``): required."""

    server_key: SecretStr
    base_url: str  # required here: there is no public Postal
    #: ``message`` (Postal builds the MIME) or ``raw`` (we send ours: our Message-ID)
    endpoint: Literal["message", "raw"] = "message"
    #: the webhook receiver's key (docs/events.md)
    webhook: PostalWebhookConfig | None = None


class PostalPayload(Payload["PostalProvider"]):
    max_tags = 1
    max_reply_to = 1
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "reply_to": "reply_to", "text": "plain_body", "html": "html_body",
        "headers": "headers", "tags": "tag",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "name", "content": "data", "type": "content_type",
    }  # fmt: skip

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        if len(addresses) > MAX_ADDRESSES:
            self.refuse(f"takes at most {MAX_ADDRESSES} {kind} addresses")
        super().add_recipients(kind, addresses)


class PostalRawPayload(Payload["PostalProvider"]):
    """``send/raw``: the message's own MIME bytes and its envelope; every header, body and
    attachment travels inside ``data``, so their hooks only have to let them through."""

    def set_from(self, sender: Address) -> None:
        self.data["mail_from"] = sender.email

    def set_subject(self, subject: str) -> None:
        pass  # in the MIME

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        if len(addresses) > MAX_ADDRESSES:
            self.refuse(f"takes at most {MAX_ADDRESSES} {kind} addresses")
        self.data.setdefault("rcpt_to", []).extend(a.email for a in addresses)

    def set_reply_to(self, reply_to: list[Address]) -> None:
        pass  # in the MIME

    def body_in_mime(self) -> bool:
        return True  # always raw

    def set_body(self, text: str | None, html: str | None) -> None:
        pass  # in the MIME

    def set_headers(self, headers: dict[str, str]) -> None:
        pass  # in the MIME (RFC 2047-encoded by the renderer)

    def add_attachment(self, attachment: Attachment) -> None:
        pass  # in the MIME

    def add_inline(self, attachment: Attachment) -> None:
        pass  # in the MIME, with its Content-ID

    def request(self) -> HTTPRequest:
        rendered = self.message.render()
        mark = None
        if isinstance(rendered, Rendering):  # a large body: streamed, never joined
            mark = self.data["data"] = placeholder()
        else:
            self.data["data"] = b64(rendered)
        self.data.setdefault("bounce", False)
        request = super().request()
        if mark is not None:
            assert isinstance(rendered, Rendering)
            head, tail = around(
                httpx.Request("POST", "https://postal.invalid", json=request.json), mark
            )
            request.body = StreamedBody(
                head,
                lambda: base64_chunks(rendered.chunks()),
                base64_size(rendered.size),
                tail,
                "application/json",
            )
            request.json = None
        return request


class PostalProvider(HTTPProvider[PostalConfig]):
    """A Postal mail server's HTTP API."""

    Config: ClassVar[type[PostalConfig]] = PostalConfig
    payload_class = PostalPayload
    send_path = "/api/v1/send/message"
    dsn_key_field = "server_key"
    key_header = "X-Server-API-Key"
    sends_message_id = False  # Postal sets its own Message-ID over any header of ours
    requires_to = False  # any of to, cc or bcc will do
    webhook_parser = PostalWebhook

    def payload(self, message: Message) -> Payload[Any]:
        if self.config.endpoint == "raw":
            return PostalRawPayload(self, message).walk()
        return super().payload(message)

    def send_target(self) -> str:
        return "/api/v1/send/raw" if self.config.endpoint == "raw" else self.send_path

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        if answer.get("status") != "success":
            raise self.error_for(answer, message)
        data = answer.get("data")
        data = data if isinstance(data, dict) else {}
        found = data.get("message_id")
        return self.result(message, answer, provider_message_id=str(found) if found else None)

    def error_text(self, answer: Answer) -> str:
        data = answer.get("data")
        if isinstance(data, dict) and (data.get("code") or data.get("message")):
            return f"{data.get('code') or 'error'}: {data.get('message') or ''}".strip()
        return super().error_text(answer)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        status = answer.get("status")
        if not answer.is_success:
            return None  # a proxy's or the server's own HTTP error: the status mapping
        data = answer.get("data")
        code = data.get("code") if isinstance(data, dict) else None
        if status == "error" and code in _ACCOUNT_CODES:
            return AuthError(f"Postal {code} ({_ACCOUNT_CODES[code]}): {text}")
        if status in ("error", "parameter-error"):
            return PermanentError(f"Postal {code or status}: {text}")
        return DeliveryUncertain(
            f"HTTP {answer.status} that is not a Postal answer; the message may have been "
            f"accepted: {text}"
        )

    # -- verify: a look-up of message 0 needs a valid key and sends nothing -------------

    def verify_request(self) -> HTTPRequest:
        return HTTPRequest("POST", "/api/v1/messages/message", json={"id": 0})

    def verify_accepts(self, answer: Answer) -> bool:
        data = answer.get("data")
        code = data.get("code") if isinstance(data, dict) else None
        return answer.is_success and (
            answer.get("status") == "success" or code == "MessageNotFound"
        )
