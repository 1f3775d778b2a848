"""Postmark /email: the request, and ErrorCode-driven results (inactive recipients)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from mailer import (
    Attachment,
    AuthError,
    Message,
    MessageError,
    PermanentError,
    RecipientsRefused,
)
from mailer.providers._postmark import PostmarkProvider

pytestmark = pytest.mark.anyio

TOKEN = "pm-server-token-secret"
URL = "https://api.postmarkapp.com/email"
SIMPLE = Message(sender="s@example.com", to=["a@example.org", "b@example.org"], subject="x",
                 text="t")  # fmt: skip


def make(**config: Any) -> PostmarkProvider:
    return PostmarkProvider.from_config("postmark", {"server_token": TOKEN, **config})


def ok(**extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"To": "a@example.org", "SubmittedAt": "2024-01-01T00:00:00Z",
                                     "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK",
                                     **extra})  # fmt: skip


async def test_request_shape(stubbed: Any) -> None:
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann <ann@example.org>", "bob@example.org"],
        cc=["cat@example.org"],
        bcc=["dan@example.org"],
        reply_to=["help@example.com"],
        subject="Your order",
        text="plain",
        html='<p><img src="cid:logo@x"></p>',
        attachments=[
            Attachment(content=b"%PDF", filename="invoice.pdf"),
            Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo@x"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["orders"],
        metadata={"order_id": "42"},
    )
    sent = await stubbed(make(message_stream="outbound"), message, "POST", URL, ok())
    request = sent.request
    assert request.method == "POST"
    assert request.url.path == "/email"
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert sent.json() == {
        "From": "Shop <shop@example.com>",
        "Subject": "Your order",
        "To": "Ann <ann@example.org>, bob@example.org",
        "Cc": "cat@example.org",
        "Bcc": "dan@example.org",
        "ReplyTo": "help@example.com",
        "TextBody": "plain",
        "HtmlBody": '<p><img src="cid:logo@x"></p>',
        "Headers": [{"Name": "X-Campaign", "Value": "spring"},
                    {"Name": "Message-ID", "Value": message.message_id}],
        "Tag": "orders",
        "Metadata": {"order_id": "42", "mailer_message_id": message.message_id},
        "Attachments": [
            {"Name": "invoice.pdf", "Content": base64.b64encode(b"%PDF").decode(),
             "ContentType": "application/pdf"},
            {"Name": "logo.png", "Content": base64.b64encode(b"PNG").decode(),
             "ContentType": "image/png", "ContentID": "cid:logo@x"},
        ],
        "MessageStream": "outbound",
    }  # fmt: skip
    assert sent.result.provider_message_id == "pm-1"


async def test_one_tag_only() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", tags=["a", "b"])
    with pytest.raises(MessageError, match="more than one tag"):
        await make().send(message)


async def test_all_inactive_is_recipients_refused(stubbed: Any) -> None:
    answer = httpx.Response(422, json={"ErrorCode": 406, "Message": (
        "You tried to send to recipient(s) that have been marked as inactive.\n"
        "Found inactive addresses: b@example.org.\nInactive recipients are ones that have "
        "generated a hard bounce, a spam complaint, or a manual suppression. ")})  # fmt: skip
    sent = await stubbed(make(), SIMPLE, "POST", URL, answer)
    assert isinstance(sent.error, RecipientsRefused)
    assert list(sent.error.refused) == ["b@example.org"]
    assert sent.error.code == 422


async def test_some_inactive_is_partial_success(stubbed: Any) -> None:
    answer = ok(Message="Message OK, but will not deliver to these inactive addresses: "
                "b@example.org. Inactive recipients are ones that have generated a hard "
                "bounce or a spam complaint.")  # fmt: skip
    sent = await stubbed(make(), SIMPLE, "POST", URL, answer)
    assert sent.result.accepted == ["a@example.org"]
    assert list(sent.result.rejected) == ["b@example.org"]


async def test_invalid_recipient_is_recipients_refused(stubbed: Any) -> None:
    answer = httpx.Response(
        422, json={"ErrorCode": 300, "Message": "Invalid 'To' address: 'b@example.org'."}
    )
    sent = await stubbed(make(), SIMPLE, "POST", URL, answer)
    assert isinstance(sent.error, RecipientsRefused)
    assert list(sent.error.refused) == ["b@example.org"]


@pytest.mark.parametrize("code", [10, 400, 401, 405, 412])
async def test_account_problems_are_auth_errors(stubbed: Any, code: int) -> None:
    answer = httpx.Response(422, json={"ErrorCode": code, "Message": "account problem"})
    sent = await stubbed(make(), SIMPLE, "POST", URL, answer)
    assert isinstance(sent.error, AuthError)
    assert f"ErrorCode {code}" in str(sent.error)


async def test_other_error_code_is_permanent_with_text(stubbed: Any) -> None:
    answer = httpx.Response(422, json={"ErrorCode": 300, "Message": "Invalid 'From' address."})
    sent = await stubbed(make(), SIMPLE, "POST", URL, answer)
    assert type(sent.error) is PermanentError
    assert "Invalid 'From' address." in str(sent.error)
