"""SendGrid v3 /mail/send: the request for each Message feature, and its answers."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx

from mailer import Attachment, ConfigError, Message, MessageError, PermanentError, RateLimited
from mailer.providers._sendgrid import SendGridProvider

pytestmark = pytest.mark.anyio

URL = "https://api.sendgrid.com/v3/mail/send"
KEY = "SG.test-key-123"


def make(**config: Any) -> SendGridProvider:
    return SendGridProvider.from_config("sendgrid", {"api_key": KEY, **config})


FULL = Message(
    sender="Shop <shop@example.com>",
    to=["Ann <ann@example.org>", "bob@example.org"],
    cc=["cat@example.org", "ann@example.org"],
    bcc=["dan@example.org"],
    reply_to=["help@example.com"],
    subject="Your order",
    text="plain",
    html='<p>html <img src="cid:logo@x"></p>',
    attachments=[
        Attachment(content=b"%PDF", filename="invoice.pdf"),
        Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo@x"),
    ],
    headers={"X-Campaign": "spring"},
    tags=["orders", "eu"],
    metadata={"order_id": "42"},
)


async def test_request_shape(stubbed: Any) -> None:
    answer = httpx.Response(202, headers={"X-Message-Id": "sg-abc"})
    sent = await stubbed(make(), FULL, "POST", URL, answer)
    request = sent.request
    assert request.method == "POST"
    assert request.url.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    body = sent.json()
    assert body["personalizations"] == [
        {
            "to": [{"email": "ann@example.org", "name": "Ann"}, {"email": "bob@example.org"}],
            "cc": [{"email": "cat@example.org"}],  # ann is already in to: SendGrid refuses twice
            "bcc": [{"email": "dan@example.org"}],
        }
    ]
    assert body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert "reply_to_list" not in body
    assert body["subject"] == "Your order"
    assert body["content"] == [
        {"type": "text/plain", "value": "plain"},
        {"type": "text/html", "value": FULL.html},
    ]
    assert body["attachments"] == [
        {"content": base64.b64encode(b"%PDF").decode(), "filename": "invoice.pdf",
         "type": "application/pdf", "disposition": "attachment"},
        {"content": base64.b64encode(b"PNG").decode(), "filename": "logo.png",
         "type": "image/png", "disposition": "inline", "content_id": "logo@x"},
    ]  # fmt: skip
    assert body["headers"] == {"X-Campaign": "spring", "Message-ID": FULL.message_id}
    assert body["categories"] == ["orders", "eu"]
    assert body["custom_args"] == {"order_id": "42", "mailer_message_id": FULL.message_id}
    result = sent.result
    assert result.provider_message_id == "sg-abc"
    assert result.message_id == FULL.message_id
    assert sorted(result.accepted) == sorted(FULL.envelope_recipients)


async def test_several_reply_to_use_reply_to_list(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", html="<p>h</p>",
                      reply_to=["r1@example.com", "R Two <r2@example.com>"])  # fmt: skip
    sent = await stubbed(make(), message, "POST", URL, httpx.Response(202))
    body = sent.json()
    assert "reply_to" not in body
    assert body["reply_to_list"] == [{"email": "r1@example.com"},
                                     {"email": "r2@example.com", "name": "R Two"}]  # fmt: skip
    assert body["content"] == [{"type": "text/html", "value": "<p>h</p>"}]


async def test_bcc_only_message_is_refused_before_io() -> None:
    message = Message(sender="s@example.com", bcc=["a@example.org"], subject="x", text="t")
    with respx.mock(assert_all_called=False) as router:
        route = router.post(URL).mock(return_value=httpx.Response(202))
        with pytest.raises(MessageError, match="To recipient"):
            await make().send(message)
    assert route.call_count == 0


async def test_too_many_categories(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      tags=[f"t{i}" for i in range(12)])  # fmt: skip
    with pytest.raises(MessageError, match="more than 10 tags"):
        await make().send(message)
    sent = await stubbed(make(ignore_unsupported=True), message, "POST", URL, httpx.Response(202))
    assert sent.json()["categories"] == [f"t{i}" for i in range(10)]


async def test_rate_limit_reset_is_a_timestamp(stubbed: Any) -> None:
    reset = str(int(time.time()) + 30)
    answer = httpx.Response(429, headers={"X-RateLimit-Reset": reset, "X-RateLimit-Limit": "600"},
                            json={"errors": [{"message": "too many requests"}]})  # fmt: skip
    sent = await stubbed(make(), FULL, "POST", URL, answer)
    assert isinstance(sent.error, RateLimited)
    assert 25 <= sent.error.retry_after <= 31
    assert "too many requests" in str(sent.error)


async def test_validation_error_text(stubbed: Any) -> None:
    answer = httpx.Response(400, json={"errors": [
        {"message": "The from email does not contain a valid address.", "field": "from.email",
         "help": "http://sendgrid.com/docs/..."}]})  # fmt: skip
    sent = await stubbed(make(), FULL, "POST", URL, answer)
    assert type(sent.error) is PermanentError
    assert "does not contain a valid address" in str(sent.error)


async def test_base_url_override(stubbed: Any) -> None:
    sent = await stubbed(make(base_url="http://127.0.0.1:9/"), FULL, "POST",
                         "http://127.0.0.1:9/v3/mail/send", httpx.Response(202))  # fmt: skip
    assert sent.result is not None


def test_dsn() -> None:
    assert SendGridProvider.config_from_url(urlsplit("sendgrid://SG.k%2Fy@default"), {}) == {
        "api_key": "SG.k/y"
    }
    cfg = SendGridProvider.config_from_url(
        urlsplit("sendgrid://apikey:SG.key@proxy.example.com:8443"), {"timeout": "3"}
    )
    assert cfg == {"api_key": "SG.key", "base_url": "https://proxy.example.com:8443",
                   "timeout": "3"}  # fmt: skip
    assert make(**{k: v for k, v in cfg.items() if k != "api_key"}).config.timeout == 3
    with pytest.raises(ConfigError):
        SendGridProvider.config_from_url(urlsplit("sendgrid://default"), {})


async def test_verify_uses_scopes() -> None:
    provider = make()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("https://api.sendgrid.com/v3/scopes").mock(
            return_value=httpx.Response(200, json={"scopes": ["mail.send"]})
        )
        await provider.verify()
    await provider.aclose()
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
