"""Postal, Scaleway, Unisender Go and Azure pass the conformance case, with each ESP's
documented error answers mapped row by row as in docs/providers.md."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import httpx

from mailer import (
    AuthError,
    DeliveryUncertain,
    Message,
    PermanentError,
    RateLimited,
    TransientError,
)
from mailer.providers._azure import AzureProvider
from mailer.providers._postal import PostalProvider
from mailer.providers._scaleway import ScalewayProvider
from mailer.providers._unisender_go import UnisenderGoProvider
from mailer.testing import ErrorCase, ProviderConformance

PROJECT = "6a7a4d0e-3c6a-4d39-8d57-2f0c4a7b9e11"
AZURE_KEY = base64.b64encode(b"azure-conformance-secret-key-32b").decode()


def _tagged(*tags: str) -> Message:
    return Message(
        sender="s@example.com", to=["to@example.org"], subject="x", text="t", tags=list(tags)
    )


# -- Postal: HTTP 200 with {"status": "error"} for its own refusals -----------------------


def _postal(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "time": 0.01,
        "flags": {},
        "data": {"code": code, "message": message, **extra},
    }


class TestPostalConformance(ProviderConformance):
    provider_class = PostalProvider
    config: ClassVar[dict[str, Any]] = {
        "server_key": "postal-conformance-secret",
        "base_url": "https://postal.example.com",
    }
    secrets = ("postal-conformance-secret",)
    endpoint = ("POST", "https://postal.example.com/api/v1/send/message")
    entry_point = "postal"
    expected_provider_message_id = "a1b2c3@rp.postal.example.com"

    def success_response(self) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "status": "success",
                "time": 0.02,
                "flags": {},
                "data": {
                    "message_id": "a1b2c3@rp.postal.example.com",
                    "messages": {
                        "to@example.org": {"id": 37, "token": "mMsAEGTzaCsh"},
                        "cc@example.org": {"id": 38, "token": "Ab12Cd34Ef56"},
                    },
                },
            },
        )

    def unsupported_message(self) -> Message:
        return _tagged("one", "two")

    documented_errors = (
        ErrorCase(
            "AccessDenied",
            200,
            _postal("AccessDenied", "Must be authenticated as a server."),
            AuthError,
            True,
        ),
        ErrorCase(
            "InvalidServerAPIKey (echoes the key)",
            200,
            _postal(
                "InvalidServerAPIKey",
                "The API token provided in X-Server-API-Key was not valid.",
                token="postal-conformance-secret",
            ),
            AuthError,
            True,
        ),
        ErrorCase(
            "ServerSuspended",
            200,
            _postal("ServerSuspended", "The mail server has been suspended"),
            AuthError,
            True,
        ),
        ErrorCase(
            "UnauthenticatedFromAddress",
            200,
            _postal(
                "UnauthenticatedFromAddress",
                "The From address is not authorised to send mail from this server",
            ),
            AuthError,
            True,
        ),
        ErrorCase(
            "ValidationError",
            200,
            _postal("ValidationError", "Subject is too long"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "NoRecipients",
            200,
            _postal("NoRecipients", "There are no recipients defined to receive this message"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "NoContent",
            200,
            _postal("NoContent", "There is no content defined for this e-mail"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "TooManyToAddresses",
            200,
            _postal(
                "TooManyToAddresses",
                "The maximum number of To addresses has been reached (maximum 50)",
            ),
            PermanentError,
            False,
        ),
        ErrorCase(
            "FromAddressMissing",
            200,
            _postal("FromAddressMissing", "The From address is missing and is required"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "AttachmentMissingName",
            200,
            _postal("AttachmentMissingName", "An attachment is missing a name"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "parameter-error",
            200,
            {
                "status": "parameter-error",
                "time": 0.0,
                "flags": {},
                "data": {"message": "Invalid JSON"},
            },
            PermanentError,
            False,
        ),
        ErrorCase("not a Postal answer", 200, "<html>ok</html>", DeliveryUncertain, False),
        ErrorCase("429 from a proxy", 429, "Too Many Requests", RateLimited, True),
        ErrorCase("502 from a proxy", 502, "Bad Gateway", TransientError, True),
        ErrorCase("500", 500, "Internal Server Error", DeliveryUncertain, False),
    )


# -- Scaleway: its common {"type", "message"} errors --------------------------------------


def _scw(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, **extra}


class TestScalewayConformance(ProviderConformance):
    provider_class = ScalewayProvider
    config: ClassVar[dict[str, Any]] = {
        "secret_key": "scw-conformance-secret",
        "project_id": PROJECT,
    }
    secrets = ("scw-conformance-secret",)
    endpoint = (
        "POST",
        "https://api.scaleway.com/transactional-email/v1alpha1/regions/fr-par/emails",
    )
    entry_point = "scaleway"
    expected_provider_message_id = "b1c0e0a2-7e6e-4c36-a8e5-0f0e6c5d4b3a"

    def success_response(self) -> httpx.Response:
        def email(rcpt: str, kind: str) -> dict[str, Any]:
            return {
                "id": f"id-{rcpt}",
                "message_id": "b1c0e0a2-7e6e-4c36-a8e5-0f0e6c5d4b3a",
                "project_id": PROJECT,
                "mail_from": "sender@example.com",
                "rcpt_to": rcpt,
                "mail_rcpt": rcpt,
                "rcpt_type": kind,
                "subject": "conformance",
                "status": "new",
            }

        return httpx.Response(
            200, json={"emails": [email("to@example.org", "to"), email("cc@example.org", "cc")]}
        )

    def unsupported_message(self) -> Message:
        return _tagged("plain-tag")

    documented_errors = (
        ErrorCase(
            "400 invalid arguments",
            400,
            _scw(
                "invalid_arguments",
                "invalid argument(s)",
                details=[
                    {
                        "argument_name": "to",
                        "reason": "constraint",
                        "help_message": "must be a valid email",
                    }
                ],
            ),
            PermanentError,
            False,
        ),
        ErrorCase(
            "401 denied authentication",
            401,
            _scw(
                "denied_authentication",
                "authentication is denied",
                method="api_key",
                reason="invalid_argument",
            ),
            AuthError,
            True,
        ),
        ErrorCase(
            "403 permissions denied",
            403,
            _scw("permissions_denied", "insufficient permissions"),
            AuthError,
            True,
        ),
        ErrorCase(
            "403 quotas exceeded",
            403,
            _scw(
                "quotas_exceeded",
                "quota(s) exceeded for this resource",
                details=[{"resource": "tem_emails", "quota": 10000, "current": 10000}],
            ),
            RateLimited,
            True,
            rest=(3600, 3600),
        ),
        ErrorCase(
            "404 not found",
            404,
            _scw("not_found", "resource is not found", resource="tem_domain"),
            AuthError,
            True,
        ),
        ErrorCase(
            "409 locked",
            409,
            _scw("locked", "resource is locked", resource="account"),
            AuthError,
            True,
        ),
        ErrorCase(
            "412 precondition failed",
            412,
            _scw(
                "precondition_failed",
                "precondition failed",
                precondition="domain_not_checked",
                help_message="the domain is not checked",
            ),
            AuthError,
            True,
        ),
        ErrorCase(
            "413 too large",
            413,
            _scw("invalid_request", "request too large"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "429 rate limit",
            429,
            _scw("too_many_requests", "rate limit exceeded"),
            RateLimited,
            True,
            rest=(30, 30),
            headers={"X-RateLimit-Reset": "30"},
        ),
        ErrorCase("500", 500, _scw("internal", "internal error"), DeliveryUncertain, False),
    )


# -- Unisender Go: {"status": "error", "message", "code"} with the HTTP status ------------


def _ug(code: int, message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "code": code}


class TestUnisenderGoConformance(ProviderConformance):
    provider_class = UnisenderGoProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "ug-conformance-secret"}
    secrets = ("ug-conformance-secret",)
    endpoint = ("POST", "https://go1.unisender.ru/ru/transactional/api/v1/email/send.json")
    entry_point = "unisendergo"
    expected_provider_message_id = "1ZymBc-00041N-9X"

    def message(self) -> Message:
        """Unisender Go has no Cc: the checks send To only."""
        return Message(
            sender="Conformance <sender@example.com>",
            to=["to@example.org"],
            subject="conformance",
            text="plain body",
            html="<p>html body</p>",
        )

    def success_response(self) -> httpx.Response:
        return httpx.Response(
            200,
            json={"status": "success", "job_id": "1ZymBc-00041N-9X", "emails": ["to@example.org"]},
        )

    def unsupported_message(self) -> Message:
        return Message(
            sender="s@example.com",
            to=["to@example.org"],
            cc=["c@example.org"],
            subject="x",
            text="t",
        )

    documented_errors = (
        ErrorCase(
            "400 bad request",
            400,
            _ug(101, "Invalid parameter 'recipients'"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "400 sender domain",
            400,
            _ug(204, "Sender domain example.com is not verified"),
            AuthError,
            True,
        ),
        ErrorCase("401 key", 401, _ug(102, "Invalid API key"), AuthError, True),
        ErrorCase("403 rights", 403, _ug(103, "Forbidden: no rights to send"), AuthError, True),
        ErrorCase("404 method", 404, _ug(104, "Method not found"), AuthError, True),
        ErrorCase("413 size", 413, _ug(105, "Request Entity Too Large"), PermanentError, False),
        ErrorCase(
            "429",
            429,
            _ug(106, "Too Many Requests"),
            RateLimited,
            True,
            rest=(5, 5),
            headers={"Retry-After": "5"},
        ),
        ErrorCase("500", 500, _ug(107, "Internal error"), DeliveryUncertain, False),
        ErrorCase("503", 503, _ug(108, "Service unavailable"), TransientError, True),
    )


# -- Azure: {"error": {"code", "message"}} ------------------------------------------------


def _az(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class TestAzureConformance(ProviderConformance):
    provider_class = AzureProvider
    config: ClassVar[dict[str, Any]] = {
        "endpoint": "https://conformance.communication.azure.com",
        "access_key": AZURE_KEY,
    }
    secrets = (AZURE_KEY,)
    endpoint = (
        "POST",
        "https://conformance.communication.azure.com/emails:send?api-version=2025-09-01",
    )
    entry_point = "azure"
    expected_provider_message_id = "7c5f9a3e-0f3b-5b57-9a3c-2c1b0f9e8d7a"

    def message(self) -> Message:
        """Azure takes the sender address alone (its display name is the resource's)."""
        return Message(
            sender="sender@example.com",
            to=["to@example.org"],
            cc=["cc@example.org"],
            subject="conformance",
            text="plain body",
            html="<p>html body</p>",
        )

    def success_response(self) -> httpx.Response:
        return httpx.Response(
            202,
            json={"id": "7c5f9a3e-0f3b-5b57-9a3c-2c1b0f9e8d7a", "status": "Running", "error": None},
        )

    def unsupported_message(self) -> Message:
        return _tagged("a-tag")

    documented_errors = (
        ErrorCase(
            "400 bad request",
            400,
            _az("BadRequest", "Invalid email address format"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "400 domain not linked",
            400,
            _az("DomainNotLinked", "The specified sender domain has not been linked."),
            AuthError,
            True,
        ),
        ErrorCase(
            "400 sender username",
            400,
            _az("InvalidSenderUserName", "Invalid sender username"),
            AuthError,
            True,
        ),
        ErrorCase(
            "401 denied", 401, _az("Denied", "Denied by the resource provider."), AuthError, True
        ),
        ErrorCase(
            "409 operation exists",
            409,
            _az("Conflict", "An operation with this Operation-Id already exists"),
            DeliveryUncertain,
            False,
        ),
        ErrorCase(
            "413 too large",
            413,
            _az("RequestEntityTooLarge", "Request body too large"),
            PermanentError,
            False,
        ),
        ErrorCase(
            "429 throttled",
            429,
            _az("TooManyRequests", "The request is throttled"),
            RateLimited,
            True,
            rest=(60, 60),
            headers={"Retry-After": "60"},
        ),
        ErrorCase(
            "500", 500, _az("InternalServerError", "Internal error"), DeliveryUncertain, False
        ),
    )


class TestPostalRawConformance(TestPostalConformance):
    """``endpoint = "raw"``: our MIME through send/raw (the same answers and errors)."""

    config: ClassVar[dict[str, Any]] = {
        "server_key": "postal-conformance-secret",
        "base_url": "https://postal.example.com",
        "endpoint": "raw",
    }
    endpoint = ("POST", "https://postal.example.com/api/v1/send/raw")
