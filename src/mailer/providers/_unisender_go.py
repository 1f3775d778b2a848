"""Unisender Go: ``POST {data centre}/ru/transactional/api/v1/email/send.json``, X-API-KEY.

An account lives in one data centre (``go1`` or ``go2`` at unisender.ru): ``data_centre``
picks it, ``base_url`` names any other (the full versioned endpoint, as Unisender's docs
give it). The body is ``{"message": {...}}``; each recipient is an object, so a To
display name travels as the ``to_name`` substitution (as django-anymail sends it).

Unisender Go sends one copy per recipient and has no Cc or Bcc: both are refused. It
takes one reply-to, custom headers, attachments and inline attachments (named by their
Content-ID), tags and ``global_metadata`` (which its webhooks echo). It builds the MIME
and sets its own Message-ID, so ours does not go out; ``job_id`` names the send.

A 200 answer lists the addresses it took (``emails``) and those it did not
(``failed_emails``: ``invalid``, ``unsubscribed``, ``permanent_unavailable``,
``temporary_unavailable``; a ``duplicate`` is also in ``emails``). Some refused: a result
with those in ``rejected``. All refused: :class:`RecipientsRefused`, or
:class:`RecipientsDeferred` when one refusal is only for now. Errors are
``{"status": "error", "message", "code"}`` with the HTTP status saying what happened
(401 key, 403 rights, 404 wrong endpoint, 413 over 10 MB, 429); the table is in
docs/providers.md.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from .._errors import AuthError, DeliveryError, RecipientsDeferred, RecipientsRefused
from .._message import Address, Attachment, Message
from .._result import SendResult
from ._unisender_go_webhook import UnisenderGoWebhook, UnisenderGoWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, b64

__all__ = ["UnisenderGoConfig", "UnisenderGoProvider"]

_DATA_CENTRES = {
    "go1": "https://go1.unisender.ru/ru/transactional/api/v1",
    "go2": "https://go2.unisender.ru/ru/transactional/api/v1",
}
#: a 400 about the sender's domain (not verified, not confirmed) is the account's
_SENDER_DOMAIN = re.compile(r"domain.*(not\s+(verified|confirmed)|unverified|unconfirmed)", re.I)
#: ``failed_emails`` reasons that may heal (the rest are final for that address)
_FOR_NOW = frozenset({"temporary_unavailable"})


class UnisenderGoConfig(HTTPConfig):
    api_key: SecretStr
    data_centre: Literal["go1", "go2"] = "go1"
    #: the webhook receiver's key (docs/events.md)
    webhook: UnisenderGoWebhookConfig | None = None


class UnisenderGoPayload(Payload["UnisenderGoProvider"]):
    max_reply_to = 1
    json_fields: ClassVar[dict[str, str]] = {
        "subject": "subject", "headers": "headers", "tags": "tags",
        "metadata": "global_metadata",
    }  # fmt: skip

    def set_from(self, sender: Address) -> None:
        self.data["from_email"] = sender.email
        if sender.name:
            self.data["from_name"] = sender.name

    def set_to(self, to: list[Address]) -> None:
        recipients = self.data["recipients"] = []
        for address in to:
            item: dict[str, Any] = {"email": address.email}
            if address.name:
                item["substitutions"] = {"to_name": address.name}
            recipients.append(item)

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self.data["reply_to"] = reply_to[0].email
        if reply_to[0].name:
            self.data["reply_to_name"] = reply_to[0].name

    def set_body(self, text: str | None, html: str | None) -> None:
        body = self.data["body"] = {}
        if text is not None:
            body["plaintext"] = text
        if html is not None:
            body["html"] = html

    def add_attachment(self, attachment: Attachment) -> None:
        self._add("attachments", attachment.filename or "", attachment)

    def add_inline(self, attachment: Attachment) -> None:
        self._add("inline_attachments", attachment.content_id or "", attachment)

    def _add(self, key: str, name: str, attachment: Attachment) -> None:
        item = {"type": attachment.mime_type(), "name": name, "content": b64(attachment.data())}
        self.data.setdefault(key, []).append(item)

    def request(self) -> HTTPRequest:
        request = super().request()
        request.json = {"message": self.data}
        return request


class UnisenderGoProvider(HTTPProvider[UnisenderGoConfig]):
    """Unisender Go's Web API v1."""

    Config: ClassVar[type[UnisenderGoConfig]] = UnisenderGoConfig
    payload_class = UnisenderGoPayload
    send_path = "/email/send.json"
    dsn_key_field = "api_key"
    key_header = "X-API-KEY"
    response_id_field = "job_id"
    sends_message_id = False  # Unisender Go sets its own Message-ID
    max_message_bytes = 10_000_000  # "requests ... of at most 10 megabytes"
    webhook_parser = UnisenderGoWebhook

    @property
    def base_url(self) -> str:
        return self.config.base_url or _DATA_CENTRES[self.config.data_centre]

    def verify_request(self) -> HTTPRequest:
        """``system/info.json``: the key's own account, sends nothing."""
        return HTTPRequest("POST", "/system/info.json", json={})

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        failed = answer.get("failed_emails")
        failed = failed if isinstance(failed, dict) else {}
        taken = {str(e).lower() for e in answer.get("emails") or []}
        refused = {
            str(address).lower(): str(reason)
            for address, reason in failed.items()
            if reason != "duplicate" and str(address).lower() not in taken
        }
        mine = self.recipients_in(message, list(refused))
        rejected = {r: refused[r.lower()] for r in mine}
        if mine and len(mine) == len(message.envelope_recipients):
            text = f"Unisender Go took no recipient: {rejected}"
            kind = RecipientsDeferred if _FOR_NOW & set(rejected.values()) else RecipientsRefused
            raise kind(
                text,
                refused=rejected,
                provider=self.name,
                code=answer.status,
                response=self.body(answer),
            )
        return self.result(
            message, answer, provider_message_id=self.provider_id(answer), rejected=rejected
        )

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        if answer.status == 404:
            return AuthError(
                f"Unisender Go HTTP 404 (no such method: check data_centre or base_url): {text}"
            )
        if answer.status == 400 and _SENDER_DOMAIN.search(text):
            return AuthError(f"Unisender Go sender domain not verified: {text}")
        return None
