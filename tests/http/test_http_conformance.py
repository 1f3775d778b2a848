"""The built-in HTTP adapters pass the same conformance case offered to plugin authors."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import httpx
import pytest

from mailer import (
    Attachment,
    AuthError,
    DeliveryError,
    DeliveryUncertain,
    Message,
    PermanentError,
    RateLimited,
    RecipientsRefused,
)
from mailer.providers._mailgun import MailgunProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers._sendgrid import SendGridPayload, SendGridProvider
from mailer.providers._ses import SESProvider
from mailer.testing import ErrorCase, ProviderConformance


def _tagged(*tags: str) -> Message:
    return Message(sender="s@example.com", to=["to@example.org"], subject="x", text="t",
                   tags=list(tags))  # fmt: skip


class TestSendGridConformance(ProviderConformance):
    provider_class = SendGridProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "SG.conformance-secret"}
    secrets = ("SG.conformance-secret",)
    endpoint = ("POST", "https://api.sendgrid.com/v3/mail/send")
    entry_point = "sendgrid"
    expected_provider_message_id = "sg-id-1"

    def success_response(self) -> httpx.Response:
        return httpx.Response(202, headers={"X-Message-Id": "sg-id-1"})

    def unsupported_message(self) -> Message:
        return _tagged(*(f"t{i}" for i in range(11)))


class TestMailgunConformance(ProviderConformance):
    provider_class = MailgunProvider
    config: ClassVar[dict[str, Any]] = {
        "api_key": "key-conformance-secret",
        "domain": "mg.example.com",
    }
    secrets = ("key-conformance-secret",)
    endpoint = ("POST", "https://api.mailgun.net/v3/mg.example.com/messages")
    entry_point = "mailgun"
    expected_provider_message_id = "<20240101.1@mg.example.com>"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"id": "<20240101.1@mg.example.com>",
                                         "message": "Queued. Thank you."})  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("a", "b", "c", "d")


class TestPostmarkConformance(ProviderConformance):
    provider_class = PostmarkProvider
    config: ClassVar[dict[str, Any]] = {"server_token": "pm-conformance-secret"}
    secrets = ("pm-conformance-secret",)
    endpoint = ("POST", "https://api.postmarkapp.com/email")
    entry_point = "postmark"
    expected_provider_message_id = "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={
            "To": "to@example.org", "SubmittedAt": "2024-01-01T00:00:00Z",
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0,
            "Message": "OK"})  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("one", "two")


class TestSESConformance(ProviderConformance):
    provider_class = SESProvider
    config: ClassVar[dict[str, Any]] = {"region": "eu-west-1", "access_key_id": "AKIDCONFORMANCE",
              "secret_access_key": "ses-conformance-secret"}  # fmt: skip
    secrets = ("ses-conformance-secret",)
    endpoint = ("POST", "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails")
    entry_point = "ses"
    expected_provider_message_id = "0102018c-ses-id"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"MessageId": "0102018c-ses-id"})

    def unsupported_message(self) -> Message:
        return _tagged("plain-tag")


class TestResendConformance(ProviderConformance):
    provider_class = ResendProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "re_conformance_secret"}
    secrets = ("re_conformance_secret",)
    endpoint = ("POST", "https://api.resend.com/emails")
    entry_point = "resend"
    expected_provider_message_id = "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})

    def unsupported_message(self) -> Message:
        return Message(
            sender="s@example.com",
            to=["to@example.org"],
            subject="x",
            text="t",
            metadata={"has space": "v"},
            attachments=[Attachment(content=b"x", filename="a.txt")],
        )


class _DropsCcPayload(SendGridPayload):
    def set_cc(self, cc: Any) -> None:
        pass


class _DropsCc(SendGridProvider):
    """An adapter that forgets cc: exactly what the field check exists to catch."""

    payload_class = _DropsCcPayload


class _DropsCcCheck(TestSendGridConformance):
    provider_class = _DropsCc


def test_field_check_catches_a_dropped_field() -> None:
    with pytest.raises(AssertionError, match=r"cc: 'mkr7q-cc@example\.org' is not in the request"):
        _DropsCcCheck().test_every_field_is_sent_or_refused()


# -- the documented error answers of each ESP, row by row as in docs/providers.md ----------

_SG_ERR = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"


def _sg(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": _SG_ERR}]}


TestSendGridConformance.documented_errors = (
    ErrorCase(
        "400 validation",
        400,
        _sg("The to array is required for all personalization objects.", "personalizations.0.to"),
        PermanentError,
        False,
    ),
    ErrorCase(
        "401 bad key",
        401,
        _sg("The provided authorization grant is invalid, expired, or revoked"),
        AuthError,
        True,
    ),
    ErrorCase("401 credits", 401, _sg("Maximum credits exceeded"), AuthError, True),
    ErrorCase(
        "403 sender identity",
        403,
        _sg(
            "The from address does not match a verified "
            "Sender Identity. Mail cannot be sent until this error is resolved.",
            "from",
        ),
        AuthError,
        True,
    ),
    ErrorCase(
        "413 too large",
        413,
        _sg("The JSON payload you have included in your request is too large."),
        PermanentError,
        False,
    ),
    ErrorCase(
        "429 rate limit",
        429,
        _sg("too many requests"),
        RateLimited,
        True,
        rest=(80000, 86401),  # a Unix timestamp a day ahead (made at import)
        headers={"X-RateLimit-Reset": str(int(time.time()) + 86400)},
    ),
    ErrorCase("500", 500, _sg("An internal server error occurred."), DeliveryUncertain, False),
)

TestMailgunConformance.documented_errors = (
    ErrorCase(
        "400 bad address",
        400,
        {"message": "'to' parameter is not a valid address. please check documentation"},
        PermanentError,
        False,
    ),
    ErrorCase("401 bad key", 401, "Forbidden", AuthError, True),
    ErrorCase("402 request failed", 402, {"message": "Request failed"}, AuthError, True),
    ErrorCase(
        "403 sandbox",
        403,
        {
            "message": "Domain sandbox1.mailgun.org is not allowed to "
            "send: Free accounts are for test purposes only."
        },
        AuthError,
        True,
    ),
    ErrorCase(
        "404 domain not found",
        404,
        {"message": "Domain not found: mg.example.com"},
        AuthError,
        True,
    ),
    ErrorCase("429", 429, {"message": "Too many requests"}, RateLimited, True),
    ErrorCase("500", 500, {"message": "Internal error"}, DeliveryUncertain, False),
)


def _pm(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}


_INACTIVE_TEXT = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
    "addresses: To@Example.org. Inactive recipients are ones that have generated a hard "
    "bounce, a spam complaint, or a manual suppression."
)
TestPostmarkConformance.documented_errors = (
    ErrorCase(
        "10 token", 401, _pm(10, "Request does not contain a valid Server token."), AuthError, True
    ),
    ErrorCase(
        "300 recipient",
        422,
        _pm(300, "Invalid 'To' address: 'Ann <To@Example.org>'."),
        RecipientsRefused,
        False,
        refused=("to@example.org",),
    ),
    ErrorCase(
        "300 address not in the message",
        422,
        _pm(300, "Invalid 'To' address: 'someone@example.net'."),
        PermanentError,
        False,
    ),
    ErrorCase("300 other", 422, _pm(300, "Zero recipients specified"), PermanentError, False),
    ErrorCase(
        "400 sender signature",
        422,
        _pm(
            400,
            "The 'From' address you supplied "
            "(s@example.com) is not a Sender Signature on your account.",
        ),
        AuthError,
        True,
    ),
    ErrorCase(
        "401 signature unconfirmed",
        422,
        _pm(401, "Sender signature not confirmed"),
        AuthError,
        True,
    ),
    ErrorCase(
        "405 not allowed",
        422,
        _pm(405, "You are not allowed to send: out of credits."),
        AuthError,
        True,
    ),
    ErrorCase(
        "406 inactive",
        422,
        _pm(406, _INACTIVE_TEXT),
        RecipientsRefused,
        False,
        refused=("to@example.org",),
    ),
    ErrorCase(
        "411 attachment type", 422, _pm(411, "Forbidden attachment type"), PermanentError, False
    ),
    ErrorCase("412 pending", 422, _pm(412, "Account is pending approval"), AuthError, True),
    ErrorCase("413 may not send", 422, _pm(413, "Account may not send"), AuthError, True),
    ErrorCase("429", 429, _pm(429, "Rate limit exceeded"), RateLimited, True),
    ErrorCase("500", 500, _pm(0, "Internal server error"), DeliveryUncertain, False),
)


def _ses(kind: str, status: int, message: str, expect: type[DeliveryError], failover: bool,
         rest: tuple[float, float] | None = None) -> ErrorCase:  # fmt: skip
    headers = {"x-amzn-ErrorType": f"{kind}:http://internal/"}
    return ErrorCase(f"{kind}: {message}", status, {"message": message}, expect, failover,
                     rest=rest, headers=headers)  # fmt: skip


TestSESConformance.documented_errors = (
    _ses(
        "MessageRejected",
        400,
        "Email address is not verified. The following identities "
        "failed the check in region EU-WEST-1: s@example.com",
        AuthError,
        True,
    ),
    _ses("MessageRejected", 400, "Illegal address", PermanentError, False),
    _ses("BadRequestException", 400, "Missing required field", PermanentError, False),
    _ses("AccountSuspendedException", 400, "Account suspended", AuthError, True),
    _ses("SendingPausedException", 400, "Sending paused for this account", AuthError, True),
    _ses(
        "MailFromDomainNotVerifiedException", 400, "MAIL FROM domain not verified", AuthError, True
    ),
    _ses("NotFoundException", 404, "Configuration set does not exist", AuthError, True),
    _ses("AccessDeniedException", 403, "not authorized to perform ses:SendEmail", AuthError, True),
    _ses("TooManyRequestsException", 429, "Maximum sending rate exceeded.", RateLimited, True),
    _ses(
        "LimitExceededException",
        400,
        "Daily message quota exceeded.",
        RateLimited,
        True,
        rest=(3600, 3600),
    ),
    _ses("InternalFailure", 500, "Internal failure", DeliveryUncertain, False),
)


def _re(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


_DAY = 24 * 3600.0
TestResendConformance.documented_errors = (
    ErrorCase(
        "422 validation",
        422,
        _re(422, "validation_error", "Invalid `to` field."),
        PermanentError,
        False,
    ),
    ErrorCase(
        "401 missing key", 401, _re(401, "missing_api_key", "Missing API key"), AuthError, True
    ),
    ErrorCase(
        "403 invalid key", 403, _re(403, "invalid_api_key", "API key is invalid"), AuthError, True
    ),
    ErrorCase(
        "403 domain not verified",
        403,
        _re(
            403,
            "validation_error",
            "The example.com domain is not verified. Please, add and verify your domain.",
        ),
        AuthError,
        True,
    ),
    ErrorCase(
        "429 rate limit",
        429,
        _re(429, "rate_limit_exceeded", "Too many requests."),
        RateLimited,
        True,
        rest=(1, 1),
        headers={"ratelimit-reset": "1"},
    ),
    ErrorCase(
        "429 daily quota",
        429,
        _re(429, "daily_quota_exceeded", "You have reached your daily email sending quota."),
        RateLimited,
        True,
        rest=(_DAY, _DAY),
        headers={"ratelimit-reset": "1"},
    ),
    ErrorCase(
        "429 monthly quota",
        429,
        _re(429, "monthly_quota_exceeded", "You have reached your monthly email sending quota."),
        RateLimited,
        True,
        rest=(_DAY, _DAY),
    ),
    ErrorCase(
        "409 concurrent",
        409,
        _re(409, "concurrent_idempotent_requests", "Same key in progress"),
        DeliveryUncertain,
        False,
    ),
    ErrorCase(
        "409 key reused",
        409,
        _re(409, "invalid_idempotent_request", "Same key, other payload"),
        PermanentError,
        False,
    ),
    ErrorCase(
        "500", 500, _re(500, "application_error", "Unexpected error"), DeliveryUncertain, False
    ),
)
