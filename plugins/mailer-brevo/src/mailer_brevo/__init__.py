"""Brevo (formerly Sendinblue) provider for mailer-failover: ``POST /v3/smtp/email``.

Installed on its own (``pip install mailer-brevo``) and found by the Mailer through the
``mailer.providers`` entry point, the way any third-party provider is. It imports only the
public modules ``mailer`` and ``mailer.providers.http``.

Brevo authenticates with an ``api-key`` header and reports its rate-limit reset, in
seconds, in ``x-sib-ratelimit-reset``. It has tags but no metadata field: metadata goes
in the ``X-Mailin-custom`` header as JSON, which Brevo returns in its webhooks. It takes a
single reply-to address and has no inline (content-id) attachments. Both Brevo SDKs
document ``htmlContent`` as required (without a template), so a text-only message is
also sent as escaped HTML.

Errors (the ``code`` of Brevo's JSON body): ``not_enough_credits`` (402),
``account_under_validation``, ``unauthorized`` (401, also an unrecognised IP),
``permission_denied`` (403) and a sender Brevo has not validated are about the account
-> AuthError, fail over; other ``invalid_parameter`` / ``missing_parameter`` are about the
message -> PermanentError.
"""

from __future__ import annotations

import html as html_lib
import importlib.metadata
import json
import re
from typing import Any, ClassVar

from pydantic import SecretStr

from mailer import AuthError, DeliveryError, Message
from mailer.providers.http import Answer, BasicAuthWebhookConfig, HTTPConfig, HTTPProvider, Payload

from .webhook import BrevoWebhook

__all__ = ["BrevoConfig", "BrevoProvider"]
#: one version source: mailer-failover's (see this package's pyproject)
__version__ = importlib.metadata.version("mailer-brevo")

#: Brevo error codes that say the account, not the message, is the problem
_ACCOUNT_CODES = {
    "not_enough_credits": "out of credits",
    "account_under_validation": "account under validation",
    "unauthorized": "key or IP address refused",
    "permission_denied": "permission denied",
}
_SENDER_INVALID = re.compile(r"sender\b.*\b(?:not valid|not verified|validate)", re.I | re.S)


class BrevoConfig(HTTPConfig):
    api_key: SecretStr
    #: HTTP Basic credentials for the webhook receiver (docs/events.md)
    webhook: BasicAuthWebhookConfig | None = None


class BrevoPayload(Payload["BrevoProvider"]):
    address_fields = ("email", "name")
    max_reply_to = 1
    json_fields: ClassVar[dict[str, str]] = {
        "from": "sender", "subject": "subject", "to": "to", "cc": "cc", "bcc": "bcc",
        "reply_to": "replyTo", "headers": "headers", "tags": "tags",
    }  # fmt: skip
    #: no content id: inline parts are refused
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachment", "filename": "name", "content": "content",
    }  # fmt: skip

    def set_body(self, text: str | None, html: str | None) -> None:
        if html is None:
            # htmlContent is required: the text, escaped, its line breaks kept
            escaped = html_lib.escape(text or "").replace("\n", "<br>\n")
            html = f"<html><body>{escaped}</body></html>"
        self.data["htmlContent"] = html
        if text is not None:
            self.data["textContent"] = text

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        if not template_id.isdigit():
            self.refuse(f"takes numeric templateId values, and {template_id!r} is not one")

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        # the stored template brings subject and content; params fill its {{ params.x }}
        self.data["templateId"] = int(template_id)
        if data:
            self.data["params"] = data

    def set_metadata(self, metadata: dict[str, str]) -> None:
        custom = json.dumps(metadata, separators=(",", ":"))
        self.data.setdefault("headers", {})["X-Mailin-custom"] = custom


class BrevoProvider(HTTPProvider[BrevoConfig]):
    """Brevo's transactional email API."""

    Config: ClassVar[type[BrevoConfig]] = BrevoConfig
    payload_class = BrevoPayload
    webhook_parser = BrevoWebhook
    default_base_url = "https://api.brevo.com"
    send_path = "/v3/smtp/email"
    dsn_key_field = "api_key"
    key_header = "api-key"
    response_id_field = "messageId"
    verify_path = "/v3/account"
    rate_limit_reset_headers = ("x-sib-ratelimit-reset",)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        code = answer.get("code")
        if isinstance(code, str) and code in _ACCOUNT_CODES:
            return AuthError(f"Brevo {code} ({_ACCOUNT_CODES[code]}): {text}")
        if code == "invalid_parameter" and _SENDER_INVALID.search(text):
            return AuthError(f"Brevo {code} (sender not validated): {text}")
        return None
