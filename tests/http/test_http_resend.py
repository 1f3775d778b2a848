"""Resend /emails: the request, the Idempotency-Key, and idempotency conflicts."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
import respx

from mailer import (
    Attachment,
    AuthError,
    DeliveryUncertain,
    Message,
    MessageError,
    PermanentError,
    RateLimited,
)
from mailer.providers._resend import ResendProvider, idempotency_key
from mailer.providers.http.correlation import tag_safe

pytestmark = pytest.mark.anyio

KEY = "re_test_secret_123"
URL = "https://api.resend.com/emails"


def make(**config: Any) -> ResendProvider:
    return ResendProvider.from_config("resend", {"api_key": KEY, **config})


def ok() -> httpx.Response:
    return httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})


async def test_request_shape(stubbed: Any) -> None:
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann <ann@example.org>"],
        cc=["cat@example.org"],
        bcc=["dan@example.org"],
        reply_to=["help@example.com"],
        subject="Your order",
        text="plain",
        html='<p><img src="cid:logo"></p>',
        attachments=[
            Attachment(content=b"%PDF", filename="invoice.pdf"),
            Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["orders"],
        metadata={"order_id": "42"},
    )
    sent = await stubbed(make(), message, "POST", URL, ok())
    request = sent.request
    assert request.method == "POST"
    assert request.url.path == "/emails"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == idempotency_key(message)
    assert sent.json() == {
        "from": "Shop <shop@example.com>",
        "subject": "Your order",
        "to": ["Ann <ann@example.org>"],
        "cc": ["cat@example.org"],
        "bcc": ["dan@example.org"],
        "reply_to": ["help@example.com"],
        "text": "plain",
        "html": '<p><img src="cid:logo"></p>',
        "headers": {"X-Campaign": "spring", "Message-ID": message.message_id},
        "attachments": [
            {"filename": "invoice.pdf", "content": base64.b64encode(b"%PDF").decode(),
             "content_type": "application/pdf"},
            {"filename": "logo.png", "content": base64.b64encode(b"PNG").decode(),
             "content_type": "image/png", "content_id": "logo"},
        ],
        "tags": [{"name": "orders", "value": "true"}, {"name": "order_id", "value": "42"},
                 {"name": "mailer_message_id", "value": tag_safe(message.message_id)}],
    }  # fmt: skip
    assert sent.result.provider_message_id == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"


async def test_same_key_and_body_on_every_retry_of_one_message() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    other = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    provider = make()
    assert provider.idempotent is True
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(URL).mock(side_effect=[httpx.ReadTimeout("lost"), ok(), ok()])
        with pytest.raises(DeliveryUncertain):
            await provider.send(message)
        await provider.send(message)  # the Mailer's retry after DeliveryUncertain
        await provider.send(other)
    await provider.aclose()
    first, retry, third = (call.request for call in route.calls)
    assert first.headers["Idempotency-Key"] == retry.headers["Idempotency-Key"]
    assert first.content == retry.content  # Resend refuses a reused key with another body
    assert third.headers["Idempotency-Key"] != first.headers["Idempotency-Key"]
    assert message.message_id.strip("<>") not in first.headers["Idempotency-Key"]
    assert len(first.headers["Idempotency-Key"]) <= 256


async def test_idempotency_conflicts(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    running = httpx.Response(409, json={"statusCode": 409, "name": "concurrent_idempotent_requests",
                                        "message": "Same key is already in progress"})  # fmt: skip
    sent = await stubbed(make(), message, "POST", URL, running)
    assert isinstance(sent.error, DeliveryUncertain)
    changed = httpx.Response(
        409,
        json={"name": "invalid_idempotent_request", "message": "Same key with a different payload"},
    )
    sent = await stubbed(make(), message, "POST", URL, changed)
    assert type(sent.error) is PermanentError
    assert "different payload" in str(sent.error)


async def test_ratelimit_reset_header(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(
        429,
        headers={"ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "1"},
        json={"name": "rate_limit_exceeded", "message": "Too many requests"},
    )
    sent = await stubbed(make(), message, "POST", URL, answer)
    assert isinstance(sent.error, RateLimited)
    assert sent.error.retry_after == 1


async def test_tag_charset_is_enforced() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", tags=["a b"])
    with pytest.raises(MessageError, match="'a b'"):
        await make().send(message)


async def test_verify_accepts_a_sending_only_key() -> None:
    provider = make()
    with respx.mock(assert_all_mocked=True) as router:
        router.get("https://api.resend.com/domains").mock(return_value=httpx.Response(
            401, json={"statusCode": 401, "name": "restricted_api_key",
                       "message": "This API key is restricted to only send emails"}))  # fmt: skip
        await provider.verify()
        router.get("https://api.resend.com/domains").mock(return_value=httpx.Response(
            401, json={"statusCode": 401, "name": "validation_error",
                       "message": "API key is invalid"}))  # fmt: skip
        with pytest.raises(AuthError):
            await provider.verify()
    await provider.aclose()
