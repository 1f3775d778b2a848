"""Mandrill (Mailchimp Transactional): ``POST /api/1.3/messages/send.json``, the key in the body.

The request is the official SDK's (``mailchimp-transactional``): JSON ``{"key": KEY,
"message": {...}}`` to ``mandrillapp.com/api/1.3`` with the ``.json`` output suffix.
The key travels in the body, so it is never a header; it is redacted from every error as
any config secret is. ``provider_options`` are merged into the top level of the body
(``{"message": {"subaccount": "eu"}, "ip_pool": "Main Pool"}``), as the API names them.

Mapping: ``from_email``/``from_name``; one ``to`` list with each recipient's ``type``
(to, cc, bcc) and ``preserve_recipients`` so that every recipient sees the To and Cc
headers, as SMTP would show them; reply-to as a ``Reply-To`` header; inline images in
``images`` named by their content id; tags and metadata as Mandrill's own.

Mandrill answers every API error with HTTP 500 and a ``name``, so the status alone says
nothing (the table is in docs/providers.md):

* ``Invalid_Key``, ``PaymentRequired``, ``Unknown_Subaccount`` -> AuthError: the
  account must act; another provider can send.
* ``ValidationError`` and other named errors about the request -> PermanentError.
* ``ServiceUnavailable`` -> TransientError; ``GeneralError`` -> DeliveryUncertain.

A 200 answers per recipient: ``sent``, ``queued`` and ``scheduled`` are accepted,
``rejected`` and ``invalid`` refused with Mandrill's ``reject_reason``. When every
recipient is refused, the reason decides: about the account or sender
(``invalid-sender``, ``unsigned``, ``test-mode-limit``) -> AuthError, fail over; about the
addresses (bounces, spam, unsubscribed, rules) -> RecipientsRefused.

Lookup (``mailer outbox reconcile``): its message search by our metadata key, which
can prove a message was sent but never that it was not (:mod:`._mandrill_lookup`).

Batches: Mandrill has no batch form for different messages, but ``messages/send`` sends
one content to many recipients, so ``send_batch``/``send_many`` merge messages that differ
only in their one To recipient (:mod:`._mandrill_batch`); any other message goes alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr

from .._errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RecipientsRefused,
    TransientError,
)
from .._message import Address, Attachment, Message
from .._result import SendResult
from . import _mandrill_batch, _mandrill_lookup
from ._mandrill_webhook import MandrillWebhook, MandrillWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, addresses_text, b64
from .http.batch import BatchOutcome
from .http.lookup import Lookup

__all__ = ["MandrillConfig", "MandrillProvider"]

#: error names about the account or its configuration, not the message
_ACCOUNT_NAMES = {
    "Invalid_Key": "the API key is not valid",
    "PaymentRequired": "the account needs payment",
    "Unknown_Subaccount": "the subaccount does not exist",
}
#: reject reasons about the account or the sender: another provider can still send
_ACCOUNT_REJECTS = {"invalid-sender", "unsigned", "test-mode-limit"}
_ACCEPTED = {"sent", "queued", "scheduled"}


class MandrillConfig(HTTPConfig):
    api_key: SecretStr
    #: the webhook's key and registered URL (docs/events.md)
    webhook: MandrillWebhookConfig | None = None


class MandrillPayload(Payload["MandrillProvider"]):
    def __init__(self, provider: MandrillProvider, message: Message) -> None:
        super().__init__(provider, message)
        self.msg: dict[str, Any] = {}
        self.data["message"] = self.msg

    def set_from(self, sender: Address) -> None:
        self.msg["from_email"] = sender.email
        if sender.name:
            self.msg["from_name"] = sender.name

    def set_subject(self, subject: str) -> None:
        self.msg["subject"] = subject

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        to = self.msg.setdefault("to", [])
        for address in addresses:
            item = {"email": address.email, "type": kind}
            if address.name:
                item["name"] = address.name
            to.append(item)
        self.msg["preserve_recipients"] = True

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self.msg.setdefault("headers", {})["Reply-To"] = addresses_text(reply_to)

    def set_body(self, text: str | None, html: str | None) -> None:
        if text is not None:
            self.msg["text"] = text
        if html is not None:
            self.msg["html"] = html

    def set_headers(self, headers: dict[str, str]) -> None:
        self.msg.setdefault("headers", {}).update(headers)

    def _file(self, key: str, name: str, attachment: Attachment) -> None:
        item = {"type": attachment.mime_type(), "name": name, "content": b64(attachment.data())}
        self.msg.setdefault(key, []).append(item)

    def add_attachment(self, attachment: Attachment) -> None:
        self._file("attachments", attachment.filename or "attachment", attachment)

    def add_inline(self, attachment: Attachment) -> None:
        self._file("images", attachment.content_id or "", attachment)  # named by content id

    def set_tags(self, tags: list[str]) -> None:
        for tag in tags:
            if tag.startswith("_"):  # Mandrill reserves them
                self.unsupported(f"tag {tag!r} (Mandrill tags may not start with _)")
                return
        self.msg["tags"] = tags

    def set_metadata(self, metadata: dict[str, str]) -> None:
        self.msg["metadata"] = metadata

    def request(self) -> HTTPRequest:
        self.data["key"] = self.provider.config.api_key.get_secret_value()
        return super().request()


class MandrillProvider(HTTPProvider[MandrillConfig]):
    """Mailchimp Transactional (Mandrill)'s messages API."""

    Config: ClassVar[type[MandrillConfig]] = MandrillConfig
    payload_class = MandrillPayload
    webhook_parser = MandrillWebhook
    default_base_url = "https://mandrillapp.com"
    send_path = "/api/1.3/messages/send.json"
    requires_to = False  # Bcc-only: every recipient has its own type
    dsn_key_field = "api_key"  # in the body (MandrillPayload.request), not a header
    max_message_bytes = 25_000_000  # "maximum message size, including attachments, is 25 MB"
    batch_size = 500  # ours: recipients merged into one messages/send (Mandrill sets none)

    def auth_headers(self) -> dict[str, str]:
        return {}  # the key is in the JSON body

    def verify_request(self) -> HTTPRequest:
        """``users/ping``: answers "PONG!" for a valid key, Invalid_Key otherwise."""
        key = self.config.api_key.get_secret_value()
        return HTTPRequest("POST", "/api/1.3/users/ping.json", json={"key": key})

    async def lookup(
        self,
        message_id: str,
        *,
        age: float,
        created: float | None = None,
        message: Message | None = None,
    ) -> Lookup:
        """Mandrill's message search by our metadata key: ``sent`` on a hit, else
        ``unknown`` (:mod:`mailer.providers._mandrill_lookup`)."""
        return await _mandrill_lookup.find(self, message_id, age=age, created=created)

    def _recipients(self, answer: Answer) -> list[dict[str, Any]]:
        data = answer.data
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        items = self._recipients(answer)
        refused: dict[str, str] = {}
        reasons: set[str] = set()
        for item in items:
            if item.get("status") not in _ACCEPTED:
                reason = str(item.get("reject_reason") or item.get("status"))
                reasons.add(reason)
                for address in self.recipients_in(message, [str(item.get("email", ""))]):
                    refused[address] = f"Mandrill {item.get('status')}: {reason}"
        ids = [str(i["_id"]) for i in items if i.get("_id") and i.get("status") in _ACCEPTED]
        kw: dict[str, Any] = {"provider": self.name, "code": answer.status,
                              "response": self.body(answer)}  # fmt: skip
        if items and len(ids) == 0:
            text = "; ".join(f"{a}: {why}" for a, why in refused.items()) or self.body(answer)
            account = reasons & _ACCOUNT_REJECTS
            if account:
                raise AuthError(
                    f"Mandrill rejected the sender ({', '.join(sorted(account))}): {text}", **kw
                )
            refused = refused or dict.fromkeys(message.envelope_recipients, text)
            raise RecipientsRefused(
                f"Mandrill refused every recipient: {text}", refused=refused, **kw
            )
        return self.result(
            message, answer, provider_message_id=ids[0] if ids else None, rejected=refused
        )

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        name = answer.get("name")
        if answer.get("status") != "error" or not isinstance(name, str):
            return None
        where = f"Mandrill {name}"
        if name in _ACCOUNT_NAMES:
            return AuthError(f"{where} ({_ACCOUNT_NAMES[name]}): {text}")
        if name == "ServiceUnavailable":
            return TransientError(f"{where}: {text}")
        if name == "GeneralError":
            return None  # an unexpected error on Mandrill's side: the 500 rule (uncertain)
        return PermanentError(f"{where}: {text}")

    # -- one content to many: messages/send with preserve_recipients false ---------------

    def batchable(self, message: Message) -> bool:
        return _mandrill_batch.batchable(message)

    def batch_groups(self, payloads: list[Payload[Any]]) -> list[list[int]]:
        return _mandrill_batch.groups(payloads)

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        return _mandrill_batch.merged_request(payloads)

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        return _mandrill_batch.outcomes(self, messages, answer)
