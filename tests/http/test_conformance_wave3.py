"""SparkPost, MailerSend, Mailtrap and Mandrill pass the conformance case offered to plugin
authors, with each API's documented error bodies mapped to the class the failover rule
wants (docs/providers.md, "Errors")."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from mailer import (
    AuthError,
    DeliveryUncertain,
    Message,
    PermanentError,
    RateLimited,
    RecipientsRefused,
    TransientError,
)
from mailer.providers import (
    MailerSendProvider,
    MailtrapProvider,
    MandrillProvider,
    SparkPostProvider,
)
from mailer.testing import ErrorCase, ProviderConformance

_HOUR, _DAY = 3600.0, 24 * 3600.0


def _tagged(*tags: str) -> Message:
    return Message(sender="s@example.com", to=["to@example.org"], subject="x", text="t",
                   tags=list(tags))  # fmt: skip


# -- SparkPost ---------------------------------------------------------------------------


def _sp(code: str, message: str, description: str = "") -> dict[str, Any]:
    error = {"message": message, "code": code}
    if description:
        error["description"] = description
    return {"errors": [error]}


class TestSparkPostConformance(ProviderConformance):
    provider_class = SparkPostProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "sp-conformance-secret"}
    secrets = ("sp-conformance-secret",)
    endpoint = ("POST", "https://api.sparkpost.com/api/v1/transmissions")
    entry_point = "sparkpost"
    expected_provider_message_id = "11668787484950529"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"results": {
            "total_rejected_recipients": 0, "total_accepted_recipients": 2,
            "id": "11668787484950529"}})  # fmt: skip

    def unsupported_message(self) -> Message:
        # SparkPost delivers to the recipients and bounces to its own address
        return Message(sender="s@example.com", to=["to@example.org"], subject="x", text="t",
                       envelope={"to": ["other@example.org"]})  # fmt: skip


TestSparkPostConformance.documented_errors = (
    ErrorCase("401 bad key", 401, _sp("1000", "Unauthorized."), AuthError, True),
    ErrorCase("403 no permission", 403, _sp("1100", "Forbidden."), AuthError, True),
    ErrorCase(
        "400 unverified domain",
        400,
        _sp("7001", "Invalid domain", "Unconfigured or unverified sending domain."),
        AuthError,
        True,
    ),
    ErrorCase(
        "400 suppressed",
        400,
        _sp(
            "1902",
            "Message generation rejected",
            "recipient address suppressed due to customer policy",
        ),
        RecipientsRefused,
        False,
        refused=("to@example.org", "cc@example.org"),
    ),
    ErrorCase(
        "420 hourly limit",
        420,
        _sp("2102", "Exceed Sending Limit (hourly)"),
        RateLimited,
        True,
        rest=(_HOUR, _HOUR),
    ),
    ErrorCase(
        "420 daily limit",
        420,
        _sp("2103", "Exceed Sending Limit (daily)"),
        RateLimited,
        True,
        rest=(_DAY, _DAY),
    ),
    ErrorCase("422 invalid", 422, _sp("1400", "Invalid data format/type"), PermanentError, False),
    ErrorCase("429", 429, _sp("1300", "Too many requests"), RateLimited, True),
    ErrorCase("500", 500, _sp("1", "Internal server error"), DeliveryUncertain, False),
    ErrorCase("503", 503, _sp("1", "Service unavailable"), TransientError, True),
)


# -- MailerSend --------------------------------------------------------------------------


class TestMailerSendConformance(ProviderConformance):
    provider_class = MailerSendProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "mlsn.conformance-secret"}
    secrets = ("mlsn.conformance-secret",)
    endpoint = ("POST", "https://api.mailersend.com/v1/email")
    entry_point = "mailersend"
    expected_provider_message_id = "5e42957d51f1d94a1070a733"

    def success_response(self) -> httpx.Response:
        return httpx.Response(202, headers={"X-Message-Id": "5e42957d51f1d94a1070a733"})

    def unsupported_message(self) -> Message:
        return _tagged(*(f"t{i}" for i in range(6)))


TestMailerSendConformance.documented_errors = (
    ErrorCase("401", 401, {"message": "Unauthenticated."}, AuthError, True),
    ErrorCase(
        "422 domain not verified",
        422,
        {
            "message": "The from.email must be verified.",
            "errors": {
                "from.email": [
                    "The from.email domain must be verified in your account to send emails. "
                    "#MS42207"
                ]
            },
        },
        AuthError,
        True,
    ),
    ErrorCase(
        "422 invalid recipient",
        422,
        {
            "message": "The to.0.email must be a valid email address.",
            "errors": {"to.0.email": ["The to.0.email must be a valid email address."]},
        },
        PermanentError,
        False,
    ),
    ErrorCase(
        "429 rate limit",
        429,
        {"message": "Too Many Attempts."},
        RateLimited,
        True,
        rest=(30, 30),
        headers={"retry-after": "30"},
    ),
    ErrorCase(
        "429 daily quota",
        429,
        {"message": "You have reached your daily request quota."},
        RateLimited,
        True,
        rest=(1, _DAY),
    ),
    ErrorCase("500", 500, {"message": "Server Error"}, DeliveryUncertain, False),
)


# -- Mailtrap ----------------------------------------------------------------------------


class TestMailtrapConformance(ProviderConformance):
    provider_class = MailtrapProvider
    config: ClassVar[dict[str, Any]] = {"api_token": "mt-conformance-secret"}
    secrets = ("mt-conformance-secret",)
    endpoint = ("POST", "https://send.api.mailtrap.io/api/send")
    entry_point = "mailtrap"
    expected_provider_message_id = "0c7fd939-02cf-11ed-88c2-0a58a9feac02"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={
            "success": True, "message_ids": ["0c7fd939-02cf-11ed-88c2-0a58a9feac02"]})  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("a", "b")


def _mt(*errors: str) -> dict[str, Any]:
    return {"success": False, "errors": list(errors)}


TestMailtrapConformance.documented_errors = (
    ErrorCase("401", 401, _mt("Unauthorized"), AuthError, True),
    ErrorCase("403", 403, _mt("Account is banned"), AuthError, True),
    ErrorCase(
        "400 domain",
        400,
        _mt("Sending from domain example.com is not allowed: domain is not verified"),
        AuthError,
        True,
    ),
    ErrorCase("400 bad field", 400, _mt("'subject' is required"), PermanentError, False),
    ErrorCase(
        "429",
        429,
        _mt("Rate limit exceeded"),
        RateLimited,
        True,
        rest=(5, 5),
        headers={"Retry-After": "5"},
    ),
    ErrorCase("500", 500, _mt("Internal Server Error"), DeliveryUncertain, False),
)


# -- Mandrill ----------------------------------------------------------------------------


class TestMandrillConformance(ProviderConformance):
    provider_class = MandrillProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "md-conformance-secret"}
    secrets = ("md-conformance-secret",)
    endpoint = ("POST", "https://mandrillapp.com/api/1.3/messages/send.json")
    entry_point = "mandrill"
    expected_provider_message_id = "abc123abc123abc123abc123abc123"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json=[
            {"email": "to@example.org", "status": "sent", "reject_reason": None,
             "_id": "abc123abc123abc123abc123abc123"},
            {"email": "cc@example.org", "status": "queued", "reject_reason": None,
             "_id": "def456def456def456def456def456"},
        ])  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("_reserved")


def _md(name: str, message: str) -> dict[str, Any]:
    return {"status": "error", "code": -1, "name": name, "message": message}


TestMandrillConformance.documented_errors = (
    ErrorCase("Invalid_Key", 500, _md("Invalid_Key", "Invalid API key"), AuthError, True),
    ErrorCase("PaymentRequired", 500, _md("PaymentRequired", "Payment required"), AuthError, True),
    ErrorCase(
        "Unknown_Subaccount",
        500,
        _md("Unknown_Subaccount", "No subaccount exists with the id 'eu'"),
        AuthError,
        True,
    ),
    ErrorCase(
        "ValidationError",
        500,
        _md("ValidationError", "You must specify a key value"),
        PermanentError,
        False,
    ),
    ErrorCase(
        "ServiceUnavailable", 500, _md("ServiceUnavailable", "Try again"), TransientError, True
    ),
    ErrorCase(
        "GeneralError", 500, _md("GeneralError", "Unexpected error"), DeliveryUncertain, False
    ),
    ErrorCase("429 from a proxy", 429, "Too Many Requests", RateLimited, True),
)
