"""Brevo: the shared conformance checks, then the /v3/smtp/email request and rate limits."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
import respx
from mailer_brevo import BrevoProvider

from mailer import (
    Attachment,
    AuthError,
    DeliveryUncertain,
    Message,
    MessageError,
    PermanentError,
    RateLimited,
)
from mailer.testing import ErrorCase, ProviderConformance

URL = "https://api.brevo.com/v3/smtp/email"
CONFIG = {"api_key": "xkeysib-brevo-secret"}


class TestBrevoConformance(ProviderConformance):
    provider_class = BrevoProvider
    config = CONFIG
    secrets = ("xkeysib-brevo-secret",)
    endpoint = ("POST", URL)
    entry_point = "brevo"
    expected_provider_message_id = "<202401011200.1@smtp-relay.mailin.fr>"
    documented_errors = (
        ErrorCase("400 invalid_parameter", 400, {"code": "invalid_parameter",
                  "message": "email is not valid in to"}, PermanentError, False),
        ErrorCase("400 missing_parameter", 400, {"code": "missing_parameter",
                  "message": "subject is missing"}, PermanentError, False),
        ErrorCase("400 sender not valid", 400, {"code": "invalid_parameter", "message":
                  "Sending has been rejected because the sender you used s@example.com is "
                  "not valid. Validate your sender or authenticate your domain"},
                  AuthError, True),
        ErrorCase("400 account_under_validation", 400, {"code": "account_under_validation",
                  "message": "Your account is under validation"}, AuthError, True),
        ErrorCase("401 unauthorized", 401, {"code": "unauthorized",
                  "message": "Key not found"}, AuthError, True),
        ErrorCase("401 unrecognised IP", 401, {"code": "unauthorized", "message":
                  "We have detected you are using an unrecognised IP address 192.0.2.1"},
                  AuthError, True),
        ErrorCase("402 not_enough_credits", 402, {"code": "not_enough_credits",
                  "message": "Not enough credits"}, AuthError, True),
        ErrorCase("403 permission_denied", 403, {"code": "permission_denied",
                  "message": "Permission denied"}, AuthError, True),
        ErrorCase("429", 429, {"code": "too_many_requests", "message": "rate limited"},
                  RateLimited, True, rest=(42, 42), headers={"x-sib-ratelimit-reset": "42"}),
        ErrorCase("500", 500, {"code": "internal_error", "message": "Internal error"},
                  DeliveryUncertain, False),
    )  # fmt: skip

    def success_response(self) -> httpx.Response:
        return httpx.Response(201, json={"messageId": self.expected_provider_message_id})

    def unsupported_message(self) -> Message:
        return Message(
            sender="s@example.com", to=["to@example.org"], subject="x", text="t",
            html='<img src="cid:logo@x">',
            attachments=[Attachment(content=b"PNG", filename="logo.png", inline=True,
                                    content_id="logo@x")],
        )  # fmt: skip


def send(message: Message, answer: httpx.Response) -> tuple[Any, httpx.Request]:
    provider = BrevoProvider.from_config("brevo", CONFIG)

    async def go() -> Any:
        try:
            return await provider.send(message)
        finally:
            await provider.aclose()

    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(URL).mock(return_value=answer)
        try:
            return asyncio.run(go()), route.calls.last.request
        finally:
            assert route.call_count == 1


def test_request_shape_for_every_feature() -> None:
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann <ann@example.org>"],
        cc=["cat@example.org"],
        bcc=["dan@example.org"],
        reply_to=["help@example.com"],
        subject="Your order",
        text="plain",
        html="<p>html</p>",
        attachments=[Attachment(content=b"%PDF", filename="a.pdf")],
        headers={"X-Campaign": "spring"},
        tags=["orders", "eu"],
        metadata={"order": "42"},
    )
    result, request = send(message, httpx.Response(201, json={"messageId": "<m1@brevo>"}))
    assert request.method == "POST"
    assert request.url.path == "/v3/smtp/email"
    assert request.headers["api-key"] == "xkeysib-brevo-secret"
    assert "Authorization" not in request.headers
    body = json.loads(request.content)
    assert body == {
        "sender": {"email": "shop@example.com", "name": "Shop"},
        "to": [{"email": "ann@example.org", "name": "Ann"}],
        "cc": [{"email": "cat@example.org"}],
        "bcc": [{"email": "dan@example.org"}],
        "replyTo": {"email": "help@example.com"},
        "subject": "Your order",
        "htmlContent": "<p>html</p>",
        "textContent": "plain",
        "headers": {
            "X-Campaign": "spring",
            "Message-ID": message.message_id,
            "X-Mailin-custom": json.dumps(
                {"order": "42", "mailer_message_id": message.message_id}, separators=(",", ":")
            ),
        },
        "attachment": [{"name": "a.pdf", "content": base64.b64encode(b"%PDF").decode()}],
        "tags": ["orders", "eu"],
    }
    assert result.provider_message_id == "<m1@brevo>"
    assert result.message_id == message.message_id


def test_rate_limit_reset_header() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(
        429, headers={"x-sib-ratelimit-reset": "42"},
        json={"code": "too_many_requests", "message": "rate limited"},
    )  # fmt: skip
    with pytest.raises(RateLimited) as info:
        send(message, answer)
    assert info.value.retry_after == 42
    assert "rate limited" in str(info.value)


def test_retry_after_wins_over_reset_header() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(429, headers={"Retry-After": "3", "x-sib-ratelimit-reset": "42"})
    start = time.monotonic()
    with pytest.raises(RateLimited) as info:
        send(message, answer)
    assert info.value.retry_after == 3
    assert time.monotonic() - start < 2  # the provider reports, it does not sleep


def test_text_only_message_sends_html_content_too() -> None:
    """Both Brevo SDKs document htmlContent as required without a template."""
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x",
                      text="a < b\nline two")  # fmt: skip
    _, request = send(message, httpx.Response(201, json={"messageId": "<m@brevo>"}))
    body = json.loads(request.content)
    assert body["textContent"] == "a < b\nline two"
    assert body["htmlContent"] == "<html><body>a &lt; b<br>\nline two</body></html>"
    assert body["headers"] == {
        "Message-ID": message.message_id,
        "X-Mailin-custom": json.dumps(
            {"mailer_message_id": message.message_id}, separators=(",", ":")
        ),
    }


def test_bcc_only_is_refused_before_io() -> None:
    message = Message(sender="s@example.com", bcc=["a@example.org"], subject="x", text="t")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post(URL).mock(return_value=httpx.Response(201, json={}))
        with pytest.raises(MessageError, match="needs at least one To"):
            asyncio.run(BrevoProvider.from_config("brevo", CONFIG).send(message))
        assert route.call_count == 0


def test_non_ascii_header_value_is_rfc2047_encoded() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      headers={"X-Greeting": "Grüße"})  # fmt: skip
    _, request = send(message, httpx.Response(201, json={"messageId": "<m@brevo>"}))
    assert json.loads(request.content)["headers"]["X-Greeting"] == "=?utf-8?b?R3LDvMOfZQ==?="


def test_a_stored_template_goes_as_template_id_and_params() -> None:
    from mailer import UnsupportedFeature

    provider = BrevoProvider.from_config("brevo", {**CONFIG, "templates": {"welcome": "12"}})
    message = Message(**{"from": "a@example.com", "to": "b@example.org",
                         "template": "welcome", "template_data": {"name": "Ada"}})  # fmt: skip
    body = provider.build_request(message).json
    assert body["templateId"] == 12 and body["params"] == {"name": "Ada"}
    assert "htmlContent" not in body and "subject" not in body
    named = BrevoProvider.from_config("brevo", {**CONFIG, "templates": {"welcome": "hi"}})
    with pytest.raises(UnsupportedFeature, match="numeric templateId"):
        named.build_request(message)
