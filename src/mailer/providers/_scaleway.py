"""Scaleway Transactional Email: ``POST /transactional-email/v1alpha1/regions/{region}/emails``.

The secret key of an IAM API key goes in ``X-Auth-Token``; the email belongs to a
``project_id`` (required: the SDK takes it from the profile, we from the config). The
region is a path segment (``fr-par``, the only one Scaleway offers TEM in today).

The API takes From/To/Cc/Bcc as ``{"email", "name"}`` objects, a text and an HTML body,
attachments (``name``, ``type``, ``content``) and ``additional_headers`` as key/value
pairs, through which Reply-To and custom headers go (as django-anymail sends them).
It has no tags, metadata or inline images: refused. Scaleway builds the MIME and sets
its own Message-ID (``emails[].message_id``); it counts 2 MB as the whole email's limit,
and takes no address with a non-ASCII local part (it makes an invalid message of it).

Errors are Scaleway's common JSON (``{"type": ..., "message": ...}``): the table is in
docs/providers.md. Authentication, permissions, a locked account, a precondition (a
domain not yet checked), a project or domain not found: account-level -> AuthError,
fail over. ``quotas_exceeded`` (the monthly email quota) -> RateLimited resting an
hour. ``invalid_arguments`` -> PermanentError.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import SecretStr, field_validator

from .._errors import AuthError, DeliveryError, RateLimited
from .._message import Address, Message
from .._result import SendResult
from ._scaleway_webhook import ScalewayWebhook, ScalewayWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, encode_header_value

__all__ = ["QUOTA_REST", "ScalewayConfig", "ScalewayProvider"]

_REGION = re.compile(r"^[a-z]{2}-[a-z]{3}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
#: error types that say the account, key, project or domain is the problem
_ACCOUNT_TYPES = {
    "denied_authentication": "the secret key is not valid",
    "permissions_denied": "the key lacks Transactional Email permissions",
    "locked": "the account or resource is locked",
    "precondition_failed": "a precondition is not met (a sending domain not checked)",
    "not_found": "the project or sending domain was not found",
}
#: seconds a quota refusal rests the provider: the quota is monthly, a probe an hour
QUOTA_REST = 3600.0


class ScalewayConfig(HTTPConfig):
    secret_key: SecretStr
    project_id: str
    region: str = "fr-par"
    #: the Topics and Events subscription's topics and Scaleway's CA (docs/events.md)
    webhook: ScalewayWebhookConfig | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError("region must be a Scaleway region such as fr-par")
        return value

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _UUID.match(value):
            raise ValueError("project_id must be the project's UUID")
        return value.lower()


class ScalewayPayload(Payload["ScalewayProvider"]):
    address_fields = ("email", "name")
    json_fields: ClassVar[dict[str, str]] = {
        "from": "from", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "text": "text", "html": "html",
    }  # fmt: skip
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "name", "content": "content", "type": "type",
    }  # fmt: skip

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self._header("Reply-To", reply_to_text(reply_to))

    def set_headers(self, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            self._header(name, value)

    def _header(self, name: str, value: str) -> None:
        self.data.setdefault("additional_headers", []).append({"key": name, "value": value})

    def request(self) -> HTTPRequest:
        self.data["project_id"] = self.provider.config.project_id
        return super().request()


class ScalewayProvider(HTTPProvider[ScalewayConfig]):
    """Scaleway's Transactional Email API (v1alpha1)."""

    Config: ClassVar[type[ScalewayConfig]] = ScalewayConfig
    payload_class = ScalewayPayload
    default_base_url = "https://api.scaleway.com"
    key_header = "X-Auth-Token"
    dsn_key_field = "secret_key"
    sends_message_id = False  # Scaleway sets its own (emails[].message_id)
    smtputf8 = False
    max_message_bytes = 2_000_000  # "Maximum email size (API): 2 MB", attachments included
    rate_limit_reset_headers = ("X-RateLimit-Reset",)
    webhook_parser = ScalewayWebhook

    def webhook(self) -> ScalewayWebhook | None:
        """The receiver, told the region whose CA to download when none is pinned."""
        if self.config.webhook is None:
            return None
        return ScalewayWebhook(self.name, self.config.webhook, self.config.region)

    def _prefix(self) -> str:
        return f"/transactional-email/v1alpha1/regions/{self.config.region}"

    def send_target(self) -> str:
        return f"{self._prefix()}/emails"

    def verify_target(self) -> str:
        return f"{self._prefix()}/domains?project_id={self.config.project_id}&page_size=1"

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        """One ``emails`` item per recipient; the first one's id names the send (each
        recipient's own id is in ``response``)."""
        emails = answer.get("emails")
        first = emails[0] if isinstance(emails, list) and emails else {}
        found = first.get("message_id") or first.get("id") if isinstance(first, dict) else None
        return self.result(message, answer, provider_message_id=str(found) if found else None)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        kind = answer.get("type")
        if kind == "quotas_exceeded":
            rest = max(self.retry_after(answer) or 0.0, QUOTA_REST)
            return RateLimited(
                f"Scaleway {kind} (resting {rest / 60:.0f} min): {text}", retry_after=rest
            )
        if kind in _ACCOUNT_TYPES:
            return AuthError(f"Scaleway {kind} ({_ACCOUNT_TYPES[kind]}): {text}")
        return None


def reply_to_text(addresses: list[Address]) -> str:
    """Reply-To as a header value: a non-ASCII display name RFC 2047-encoded, as the
    header will be written."""
    return ", ".join(
        f"{encode_header_value(a.name)} <{a.email}>" if a.name and not a.name.isascii() else str(a)
        for a in addresses
    )
