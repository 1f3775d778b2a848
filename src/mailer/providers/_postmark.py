"""Postmark: ``POST /email`` (``/email/batch`` for 500 at once), X-Postmark-Server-Token.

Postmark reports errors as an ``ErrorCode`` in a JSON body (mostly with HTTP 422), so the
status alone does not say what happened (the table is in docs/providers.md):

* ErrorCode 406 (inactive recipient: hard bounce, complaint, suppression): nothing was
  sent -> :class:`RecipientsRefused` naming the addresses Postmark listed.
* ErrorCode 0 with "will not deliver to these inactive addresses": sent to the others ->
  success with those addresses in ``rejected``.
* ErrorCode 300 naming an invalid To/Cc/Bcc address of the message -> RecipientsRefused
  keyed by the message's own recipient; any other 300 -> PermanentError.
* Account-level codes (bad token, sender signature missing or unconfirmed, not allowed to
  send, account pending or may not send) -> :class:`AuthError`: another provider can send
  the same message, and this one will not work until someone fixes the account.

A stored template (``templates``: ``{"welcome": "welcome-v2"}`` for a TemplateAlias, or a
numeric TemplateId) goes to ``POST /email/withTemplate`` with ``TemplateModel``, the data.

Postmark takes a single tag per message and needs a To recipient.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlencode

from pydantic import SecretStr

from .._errors import AuthError, DeliveryError, PermanentError, RecipientsRefused
from .._message import Address, Attachment, Message
from .._result import SendResult
from . import _postmark_records as postmark_records
from ._postmark_webhook import PostmarkWebhook
from .http import Answer, BatchOutcome, HTTPConfig, HTTPProvider, HTTPRequest, Payload, redact
from .http.correlation import CORRELATION_KEY
from .http.lookup import ABSENT_AFTER, Lookup
from .http.payload import addresses_text
from .http.suppressions import Listed
from .http.webhook import BasicAuthWebhookConfig

__all__ = ["PostmarkConfig", "PostmarkProvider"]

#: ErrorCodes that say the account, not the message, is the problem
_ACCOUNT_ERRORS = {
    10: "bad or missing server token",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send (account, credits)",
    412: "account pending approval",
    413: "account may not send",
}
_INACTIVE = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.S | re.I)
_INVALID = re.compile(r"^(?:Invalid|Error\s+parsing)\s+'(?:To|Cc|Bcc)'[^']*'([^']*)'", re.I)


#: seconds Postmark lists a message for at the least: its retention is 45 days by
#: default and can be lowered to 7, so an older row's absence from the search is no proof
SEARCH_KEPT = 7 * 86_400.0

_MODEL_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _keys(data: Any) -> list[str]:
    """Every key of a JSON value, nested objects and lists of objects included."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in (str(key), *_keys(value))]
    if isinstance(data, list):
        return [k for item in data for k in _keys(item)]
    return []


class PostmarkConfig(HTTPConfig):
    server_token: SecretStr
    #: the webhook receiver's secret (docs/events.md)
    webhook: BasicAuthWebhookConfig | None = None
    message_stream: str | None = None


def _listed(pattern: re.Pattern[str], text: str) -> list[str]:
    match = pattern.search(text)
    return [a.strip() for a in match.group(1).split(",")] if match else []


class PostmarkPayload(Payload["PostmarkProvider"]):
    max_tags = 1
    json_fields: ClassVar[dict[str, str]] = {
        "from": "From", "subject": "Subject", "to": "To", "cc": "Cc", "bcc": "Bcc",
        "reply_to": "ReplyTo", "text": "TextBody", "html": "HtmlBody", "tags": "Tag",
        "metadata": "Metadata",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "Attachments", "filename": "Name", "content": "Content",
        "type": "ContentType", "content_id": "ContentID",
    }  # fmt: skip

    def json_addresses(self, addresses: list[Address]) -> str:
        return addresses_text(addresses)  # Postmark takes one comma-separated string

    def set_headers(self, headers: dict[str, str]) -> None:
        self.data["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]

    def content_id(self, attachment: Attachment) -> str:
        return f"cid:{attachment.content_id}"

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        # TemplateModel is a JSON object whose keys Mustachio reads as names: a key with a
        # dot or a space cannot be reached ({{a.b}} walks into a), so it is a mistake
        for key in _keys(data):
            if not _MODEL_KEY.fullmatch(key):
                self.refuse(
                    f"cannot reach TemplateModel key {key!r} from a template (Mustachio "
                    "names: letters, digits, '_' and '-', no dots or spaces)"
                )

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        if template_id.isdigit():
            self.data["TemplateId"] = int(template_id)
        else:
            self.data["TemplateAlias"] = template_id
        self.data["TemplateModel"] = data
        self.target = "/email/withTemplate"

    def request(self) -> HTTPRequest:
        if self.provider.config.message_stream:
            self.data["MessageStream"] = self.provider.config.message_stream
        return super().request()


class PostmarkProvider(HTTPProvider[PostmarkConfig]):
    """Postmark's Email API."""

    Config: ClassVar[type[PostmarkConfig]] = PostmarkConfig
    payload_class = PostmarkPayload
    webhook_parser = PostmarkWebhook
    default_base_url = "https://api.postmarkapp.com"
    send_path = "/email"
    dsn_key_field = "server_token"
    key_header = "X-Postmark-Server-Token"
    response_id_field = "MessageID"
    verify_path = "/server"
    batch_size = 500
    max_message_bytes = 10_000_000  # "10 MB including attachments", base64-encoded
    batch_max_bytes = 50_000_000  # "up to 50 MB payload size, including attachments"

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        text = redact(str(answer.get("Message") or ""))
        refused = self.recipients_in(message, _listed(_INACTIVE, text))
        return self.result(
            message,
            answer,
            provider_message_id=answer.get("MessageID"),
            rejected=dict.fromkeys(refused, text),
        )

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        code = answer.get("ErrorCode")
        if code is None:
            return None
        where = f"Postmark ErrorCode {code}"
        if code == 406:
            refused = self.recipients_in(message, _listed(_INACTIVE, text))
            if not refused and message is not None:
                refused = message.envelope_recipients
            return RecipientsRefused(f"{where}: {text}", refused=dict.fromkeys(refused, text))
        if code == 300:
            refused = self.recipients_in(message, _listed(_INVALID, text))
            if refused:
                return RecipientsRefused(f"{where}: {text}", refused=dict.fromkeys(refused, text))
            return PermanentError(f"{where} (invalid email request): {text}")
        if isinstance(code, int) and code in _ACCOUNT_ERRORS:
            return AuthError(f"{where} ({_ACCOUNT_ERRORS[code]}): {text}")
        return None

    async def lookup(
        self,
        message_id: str,
        *,
        age: float,
        created: float | None = None,
        message: Message | None = None,
    ) -> Lookup:
        """Postmark's outbound message search, filtered by our Metadata key: a message it
        accepted is listed there (for the server's retention). An empty result proves
        absence only once the last attempt is older than ABSENT_AFTER (the index lags) and
        the row was created within :data:`SEARCH_KEPT` (every attempt still listed)."""
        query = urlencode({"count": 1, "offset": 0, f"metadata_{CORRELATION_KEY}": message_id})
        answer = await self.request(HTTPRequest("GET", f"/messages/outbound?{query}"), commit=False)
        total, found = answer.get("TotalCount"), answer.get("Messages")
        if not answer.is_success or not isinstance(total, int):
            return Lookup("unknown", f"Postmark's search answered HTTP {answer.status}")
        if total > 0 and isinstance(found, list) and found and isinstance(found[0], dict):
            return Lookup(
                "sent",
                "listed in Postmark's outbound messages",
                str(found[0].get("MessageID") or "") or None,
            )
        span = time.time() - created if created is not None else age  # to the 1st try
        if total == 0 and age >= ABSENT_AFTER and span <= SEARCH_KEPT:
            return Lookup("absent", "not in Postmark's outbound messages")
        return Lookup("unknown", "not (yet) in Postmark's outbound messages")

    # -- /email/batch: up to 500 messages, one answer item per message, in order --------

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        return HTTPRequest("POST", "/email/batch", json=[p.request().json for p in payloads])

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        data = answer.data
        if not isinstance(data, list) or len(data) != len(messages):
            # a 2xx that does not say what happened to each message
            text = f"batch answer has no item per message: {self.body(answer)}"
            return self.uncertain(text, len(messages))
        out: list[BatchOutcome] = []
        for message, item in zip(messages, data, strict=True):
            item = item if isinstance(item, dict) else {}
            status = 200 if item.get("ErrorCode") == 0 else 422
            read = Answer.item(status, item)
            out.append(
                self.parse_success(message, read)
                if status == 200
                else self.error_for(read, message)
            )
        return out

    def suppressions(self) -> AsyncIterator[list[Listed]]:
        """Postmark's own suppression list (:mod:`mailer.providers._postmark_records`)."""
        return postmark_records.suppressions(self)
