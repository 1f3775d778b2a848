"""MailerSend: ``POST /v1/email``, a Bearer API token, 202 and X-Message-Id.

The body is the one the official SDK (``mailersend`` 2.x, ``EmailRequest``) sends: address
objects, one reply-to, attachments with a disposition (an inline image carries its
content id as ``id``), up to five tags, custom headers as name/value pairs (a
Professional-plan feature: MailerSend answers 422 on other plans). MailerSend takes no
metadata and sets its own Message-ID, so metadata is refused and our Message-ID is not
sent (the result keeps it; MailerSend's own id is ``provider_message_id``).

Limits refused before any I/O: 50 To, 10 Cc and 10 Bcc recipients, 5 tags, 25 MB.

Answers (the table is in docs/providers.md):

* 202 with ``warnings`` of type ``SOME_SUPPRESSED``: sent to the others, the suppressed
  addresses in ``rejected``; ``ALL_SUPPRESSED``: nothing sent -> RecipientsRefused.
* 422 about ``from`` (sender domain not verified, ``#MS42207``) -> AuthError: the
  account must act, another provider can send; other 422s are about the message.
* 429 daily quota ("daily request quota") -> RateLimited until midnight UTC, when
  MailerSend resets it; other 429s rest for Retry-After.
* 401 bad token, 403 plan or account refusal -> AuthError (the status mapping).

Batches: with ``bulk = true``, ``send_batch``/``send_many`` go through
``POST /v1/bulk-email`` (500 a request) and a bounded poll of its status
(:mod:`._mailersend_bulk`, where what an unfinished poll means is said). Off by default:
a bulk answers 202 before validating, so a poll that runs out leaves its messages
uncertain where single sends would each have had a definitive answer.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from .._errors import AuthError, DeliveryError, RateLimited, RecipientsRefused
from .._message import Address, Message
from .._result import SendResult
from ._mailersend_bulk import BULK_PATH, poll_bulk
from ._mailersend_webhook import MailerSendWebhook, MailerSendWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload
from .http.batch import BatchOutcome

__all__ = ["MailerSendConfig", "MailerSendProvider"]

#: the API's recipient limits per message
_LIMITS = {"to": 50, "cc": 10, "bcc": 10}


class MailerSendConfig(HTTPConfig):
    api_key: SecretStr
    #: the webhook's signing secret (docs/events.md)
    webhook: MailerSendWebhookConfig | None = None
    #: send_batch/send_many through the bulk endpoint (docs/providers.md)
    bulk: bool = False
    #: how long a bulk's status is polled for each message's outcome (seconds)
    bulk_wait: float = Field(default=30.0, gt=0, le=600)


def until_midnight_utc(now: float | None = None) -> float:
    """Seconds until the next 00:00 UTC, when MailerSend's daily quota is reset."""
    current = time.time() if now is None else now
    return 86400.0 - (current % 86400.0)


class MailerSendPayload(Payload["MailerSendProvider"]):
    address_fields = ("email", "name")
    max_tags = 5
    max_reply_to = 1
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "reply_to": "reply_to", "text": "text", "html": "html", "tags": "tags",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "filename", "content": "content",
        "disposition": "disposition", "content_id": "id",
    }  # fmt: skip

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        limit = _LIMITS[kind]
        if len(addresses) > limit:
            self.refuse(
                f"takes at most {limit} {kind} recipients per message "
                f"(this one has {len(addresses)}); split it or use SMTP"
            )
        super().add_recipients(kind, addresses)

    def set_headers(self, headers: dict[str, str]) -> None:
        self.data["headers"] = [{"name": k, "value": v} for k, v in headers.items()]


class MailerSendProvider(HTTPProvider[MailerSendConfig]):
    """MailerSend's Email API."""

    Config: ClassVar[type[MailerSendConfig]] = MailerSendConfig
    payload_class = MailerSendPayload
    webhook_parser = MailerSendWebhook
    default_base_url = "https://api.mailersend.com"
    send_path = "/v1/email"
    verify_path = "/v1/api-quota"
    dsn_key_field = "api_key"
    key_header = "Authorization"
    key_prefix = "Bearer "
    sends_message_id = False  # MailerSend sets its own
    max_message_bytes = 25_000_000  # "total size of all attachments ... 25MB"
    rate_limit_reset_headers = ("x-ratelimit-reset",)
    batch_size = 500  # "up to 500 email objects" per bulk request
    batch_max_bytes = 50_000_000  # ours: MailerSend documents no size limit for a bulk

    def provider_id(self, answer: Answer) -> str | None:
        return answer.headers.get("X-Message-Id")

    @staticmethod
    def _suppressed(answer: Answer) -> tuple[bool, list[str], str]:
        """(all suppressed?, the addresses, MailerSend's words) from a 202's warnings."""
        every, addresses, words = False, [], []
        for warning in answer.get("warnings") or []:
            if not isinstance(warning, dict):
                continue
            every = every or warning.get("type") == "ALL_SUPPRESSED"
            words.append(str(warning.get("warning") or warning.get("type")))
            for item in warning.get("recipients") or []:
                if isinstance(item, dict) and isinstance(item.get("email"), str):
                    reasons = ", ".join(str(r) for r in item.get("reasons") or [])
                    addresses.append(item["email"])
                    words.append(f"{item['email']}: {reasons}" if reasons else item["email"])
        return every, addresses, "; ".join(words)

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        every, addresses, text = self._suppressed(answer)
        refused = self.recipients_in(message, addresses)
        if every:
            refused = refused or list(message.envelope_recipients)
            raise RecipientsRefused(
                f"MailerSend ALL_SUPPRESSED: {text}",
                refused=dict.fromkeys(refused, text),
                provider=self.name,
                code=answer.status,
                response=self.body(answer),
            )
        return self.result(
            message,
            answer,
            provider_message_id=self.provider_id(answer),
            rejected=dict.fromkeys(refused, text),
        )

    def error_text(self, answer: Answer) -> str:
        message = answer.get("message")
        errors = answer.get("errors")
        if isinstance(message, str) and isinstance(errors, dict) and errors:
            details = [f"{field}: {' '.join(str(t) for t in texts)}"
                       if isinstance(texts, list) else f"{field}: {texts}"
                       for field, texts in errors.items()]  # fmt: skip
            return f"{message} ({'; '.join(details)})"
        return super().error_text(answer)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        errors: Any = answer.get("errors")
        fields = list(errors) if isinstance(errors, dict) else []
        if answer.status == 422 and any(f == "from" or f.startswith("from.") for f in fields):
            return AuthError(f"MailerSend sender refused (verify the domain): {text}")
        if answer.status == 429 and "quota" in text.lower():
            rest = max(self.retry_after(answer) or 0.0, until_midnight_utc())
            return RateLimited(
                f"MailerSend daily quota (resting {rest / 3600:.1f} h): {text}", retry_after=rest
            )
        return None

    # -- /v1/bulk-email: 202 and an id, then each outcome from a poll -------------------

    def batchable(self, message: Message) -> bool:
        return self.config.bulk

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        return HTTPRequest("POST", BULK_PATH, json=[p.request().json for p in payloads])

    async def finish_batch(self, messages: list[Message], answer: Answer) -> list[BatchOutcome]:
        return await poll_bulk(self, messages, answer)
