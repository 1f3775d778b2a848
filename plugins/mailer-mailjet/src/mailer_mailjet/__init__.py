"""Mailjet provider for mailer-failover: Send API v3.1, ``POST /v3.1/send``.

Installed on its own (``pip install mailer-mailjet``) and found by the Mailer through the
``mailer.providers`` entry point, the way any third-party provider is. It imports only the
public modules ``mailer`` and ``mailer.providers.http``.

Mailjet answers per message (``Messages[].Status``) and per recipient (the ``To``, ``Cc``
and ``Bcc`` lists of a successful message). One Mailjet message per Message (up to 50 in
one request with ``send_batch``), so:

* status "success": sent; an envelope recipient Mailjet did not list is put in
  ``SendResult.rejected`` (a partial success: the others must not be sent again);
* status "error" whose errors all concern recipient fields (``ErrorRelatedTo``
  ``To[0].Email`` ...): :class:`~mailer.RecipientsRefused` naming them;
* an error about the sender (``send-0008``: not an authorized sender for the account, or
  a 401/403 ``StatusCode`` related to ``From``): :class:`~mailer.AuthError`, fail over;
* any other error: :class:`~mailer.PermanentError`; an answer without per-message
  statuses: the HTTP status mapping of the shared HTTP base.

Mailjet sets its own Message-ID; ours goes as ``CustomID``, which its webhooks return.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from typing import Any, ClassVar
from urllib.parse import SplitResult

import httpx
from pydantic import SecretStr

from mailer import (
    Address,
    AuthError,
    DeliveryError,
    Message,
    PermanentError,
    RecipientsRefused,
    SendResult,
)
from mailer.providers.http import (
    Answer,
    BasicAuthWebhookConfig,
    BatchOutcome,
    HTTPConfig,
    HTTPProvider,
    HTTPRequest,
    Payload,
    redact,
    unique_recipients,
)

from .webhook import MailjetWebhook

__all__ = ["MailjetConfig", "MailjetProvider"]
#: one version source: mailer-failover's (see this package's pyproject)
__version__ = importlib.metadata.version("mailer-mailjet")

_RELATED = re.compile(r"^(To|Cc|Bcc)\[(\d+)\]")
#: Mailjet error codes about the account's sender identity
_SENDER_CODES = frozenset({"send-0008"})


class MailjetConfig(HTTPConfig):
    api_key: SecretStr
    secret_key: SecretStr
    #: HTTP Basic credentials for the webhook receiver (docs/events.md)
    webhook: BasicAuthWebhookConfig | None = None
    sandbox: bool = False


class MailjetPayload(Payload["MailjetProvider"]):
    """One item of ``Messages``: a single send is a batch of one."""

    address_fields = ("Email", "Name")
    max_reply_to = 1
    max_tags = 1  # one CustomCampaign
    json_fields: ClassVar[dict[str, str]] = {
        "from": "From", "subject": "Subject", "to": "To", "cc": "Cc", "bcc": "Bcc",
        "reply_to": "ReplyTo", "text": "TextPart", "html": "HTMLPart", "headers": "Headers",
        "tags": "CustomCampaign",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "Attachments", "inline_list": "InlinedAttachments", "filename": "Filename",
        "content": "Base64Content", "type": "ContentType", "content_id": "ContentID",
    }  # fmt: skip

    def set_from(self, sender: Address) -> None:
        super().set_from(sender)
        self.data["CustomID"] = self.message.message_id

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        if not template_id.isdigit():
            self.refuse(f"takes numeric TemplateID values, and {template_id!r} is not one")

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        # TemplateLanguage on: without it Mailjet sends the template's {{var:x}} unfilled
        self.data.update(TemplateID=int(template_id), TemplateLanguage=True, Variables=data)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        # returned verbatim in Mailjet's event webhooks
        self.data["EventPayload"] = json.dumps(metadata, separators=(",", ":"))

    def request(self) -> HTTPRequest:
        return self.provider.batch_request([self])


class MailjetProvider(HTTPProvider[MailjetConfig]):
    """Mailjet's Send API v3.1 (Basic auth with the API key and secret key)."""

    Config: ClassVar[type[MailjetConfig]] = MailjetConfig
    payload_class = MailjetPayload
    webhook_parser = MailjetWebhook
    default_base_url = "https://api.mailjet.com"
    send_path = "/v3.1/send"
    verify_path = "/v3/REST/apikey"
    sends_message_id = False
    batch_size = 50

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``mailjet://API_KEY:SECRET_KEY@default``."""
        key, secret = cls.url_credentials(url)
        out: dict[str, Any] = {**params, **cls.url_base(url)}
        if key:
            out["api_key"] = key
        if secret:
            out["secret_key"] = secret
        return out

    def auth(self) -> httpx.Auth:
        return httpx.BasicAuth(
            self.config.api_key.get_secret_value(), self.config.secret_key.get_secret_value()
        )

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        body: dict[str, Any] = {"Messages": [p.data for p in payloads]}
        if self.config.sandbox:
            body["SandboxMode"] = True
        return HTTPRequest("POST", self.send_target(), json=body)

    # -- the answer: one status per message ---------------------------------------------

    @staticmethod
    def _items(answer: Answer) -> list[Any]:
        messages = answer.get("Messages")
        return messages if isinstance(messages, list) else []

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        items = self._items(answer)
        if not items or not isinstance(items[0], dict):
            # a 2xx is an acceptance even when its body cannot be read
            return self.result(message, answer)
        outcome = self._outcome(message, items[0], answer)
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def batch_has_items(self, answer: Answer, count: int) -> bool:
        return answer.status in (400, 422) and len(self._items(answer)) == count

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        items = self._items(answer)
        if len(items) != len(messages):
            text = f"batch answer has no item per message: {self.body(answer)}"
            return self.uncertain(text, len(messages))
        return [
            self._outcome(m, item if isinstance(item, dict) else {}, answer)
            for m, item in zip(messages, items, strict=True)
        ]

    def _outcome(
        self, message: Message, item: dict[str, Any], answer: Answer
    ) -> SendResult | DeliveryError:
        if item.get("Status") != "success":
            return self.message_error(item, answer, message)
        listed: dict[str, str | None] = {}
        for key in ("To", "Cc", "Bcc"):
            for entry in item.get(key) or []:
                if isinstance(entry, dict) and "Email" in entry:
                    uuid = entry.get("MessageUUID") or entry.get("MessageID")
                    listed[str(entry["Email"]).lower()] = str(uuid) if uuid else None
        rejected = {}
        if listed:
            rejected = {
                r: "not in Mailjet's list of accepted recipients"
                for r in message.envelope_recipients
                if r.lower() not in listed
            }
        first_id = next((v for v in listed.values() if v), None)
        return self.result(message, Answer.item(200, item),
                           provider_message_id=first_id, rejected=rejected)  # fmt: skip

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        items = self._items(answer)
        first = items[0] if items else None
        error_item = isinstance(first, dict) and first.get("Status") == "error"
        if answer.status in (400, 422) and error_item:
            assert isinstance(first, dict)
            return self.message_error(first, answer, message)
        return None

    def error_text(self, answer: Answer) -> str:
        texts = [
            str(err.get("ErrorMessage", ""))
            for m in self._items(answer)
            if isinstance(m, dict)
            for err in m.get("Errors") or []
            if isinstance(err, dict)
        ]
        if any(texts):
            return "; ".join(t for t in texts if t)
        return super().error_text(answer)

    def message_error(
        self, item: dict[str, Any], answer: Answer, message: Message | None
    ) -> DeliveryError:
        """A Mailjet per-message error: sender refused, recipients refused, or the message."""
        errors = [e for e in item.get("Errors") or [] if isinstance(e, dict)]
        text = redact("; ".join(str(e.get("ErrorMessage", "")) for e in errors)) or "error"
        kw: dict[str, Any] = {"code": answer.status, "response": self.body(answer)}
        for err in errors:
            related = [str(r) for r in err.get("ErrorRelatedTo") or []]
            if err.get("ErrorCode") in _SENDER_CODES or (
                err.get("StatusCode") in (401, 403) and any(r.startswith("From") for r in related)
            ):
                return AuthError(f"Mailjet refused the sender: {text}", **kw)
        refused: dict[str, str] = {}
        recipient_errors = 0
        for err in errors:
            related = [str(r) for r in err.get("ErrorRelatedTo") or []]
            hits = [m for m in (_RELATED.match(r) for r in related) if m]
            if hits and len(hits) == len(related):
                recipient_errors += 1
                for hit in hits:
                    addr = self._recipient_at(message, hit.group(1), int(hit.group(2)))
                    if addr is not None:
                        refused[addr] = redact(str(err.get("ErrorMessage", "")))
        if errors and recipient_errors == len(errors) and refused:
            return RecipientsRefused(f"Mailjet refused recipients: {text}", refused=refused, **kw)
        return PermanentError(f"Mailjet refused the message: {text}", **kw)

    @staticmethod
    def _recipient_at(message: Message | None, field: str, index: int) -> str | None:
        if message is None:
            return None
        to, cc, bcc = unique_recipients(message)
        group = {"To": to, "Cc": cc, "Bcc": bcc}[field]
        return group[index].email if 0 <= index < len(group) else None
