"""Mailjet: the shared conformance checks, then the v3.1 request and per-message results."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
import respx
from mailer_mailjet import MailjetProvider

from mailer import (
    Attachment,
    AuthError,
    DeliveryUncertain,
    Message,
    PermanentError,
    RateLimited,
    RecipientsRefused,
)
from mailer.testing import ErrorCase, ProviderConformance

URL = "https://api.mailjet.com/v3.1/send"
CONFIG = {"api_key": "mj-public-key-123", "secret_key": "mj-secret-key-456"}


def success(to: list[str], cc: list[str] | None = None, bcc: list[str] | None = None) -> Any:
    def listed(addrs: list[str], start: int) -> list[dict[str, Any]]:
        return [
            {"Email": a, "MessageUUID": f"uuid-{start + i}", "MessageID": 1000 + start + i}
            for i, a in enumerate(addrs)
        ]

    return {
        "Messages": [
            {
                "Status": "success",
                "CustomID": "",
                "To": listed(to, 0),
                "Cc": listed(cc or [], 10),
                "Bcc": listed(bcc or [], 20),
            }
        ]
    }


def _mj_error(code: str, status: int, text: str, related: str) -> dict[str, Any]:
    """Mailjet's documented v3.1 per-message error answer."""
    return {"Messages": [{"Status": "error", "Errors": [{
        "ErrorIdentifier": "c04ac4d7", "ErrorCode": code, "StatusCode": status,
        "ErrorMessage": text, "ErrorRelatedTo": [related]}]}]}  # fmt: skip


class TestMailjetConformance(ProviderConformance):
    provider_class = MailjetProvider
    config = CONFIG
    secrets = ("mj-secret-key-456", "mj-public-key-123")
    endpoint = ("POST", URL)
    entry_point = "mailjet"
    expected_provider_message_id = "uuid-0"
    documented_errors = (
        ErrorCase("401 key", 401, {"ErrorIdentifier": "a1", "StatusCode": 401, "ErrorMessage":
                  "API key authentication/authorization failure. You may be unauthorized to "
                  "access the API or your API key may be expired."}, AuthError, True),
        ErrorCase("send-0008 sender", 400, _mj_error("send-0008", 403, '"s@example.com" is '
                  "not an authorized sender email address for your account.", "From"),
                  AuthError, True),
        ErrorCase("mj-0013 recipient", 400, _mj_error("mj-0013", 400, '"to@example.org" is '
                  "an invalid email address.", "To[0].Email"), RecipientsRefused, False,
                  refused=("to@example.org",)),
        ErrorCase("mj-0003 message", 400, _mj_error("mj-0003", 400,
                  "Missing mandatory property.", "Subject"), PermanentError, False),
        ErrorCase("429", 429, {"ErrorMessage": "Too many requests", "StatusCode": 429},
                  RateLimited, True),
        ErrorCase("500", 500, {"ErrorMessage": "Internal error", "StatusCode": 500},
                  DeliveryUncertain, False),
    )  # fmt: skip

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json=success(["to@example.org"], ["cc@example.org"]))

    def unsupported_message(self) -> Message:
        return Message(
            sender="s@example.com", to=["to@example.org"], subject="x", text="t",
            tags=["one", "two"],
        )  # fmt: skip


def send(message: Message, answer: httpx.Response, **config: Any) -> tuple[Any, httpx.Request]:
    provider = MailjetProvider.from_config("mj", {**CONFIG, **config})

    async def go() -> Any:
        try:
            return await provider.send(message)
        finally:
            await provider.aclose()

    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(URL).mock(return_value=answer)
        try:
            result = asyncio.run(go())
        finally:
            request = route.calls.last.request if route.calls else None
    assert request is not None
    return result, request


def test_request_shape_for_every_feature() -> None:
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann <ann@example.org>", "bob@example.org"],
        cc=["cat@example.org"],
        bcc=["dan@example.org", "ann@example.org"],  # duplicate: sent once
        reply_to=["Help <help@example.com>"],
        subject="Your order",
        text="plain",
        html='<p>html <img src="cid:logo@x"></p>',
        attachments=[
            Attachment(content=b"%PDF", filename="a.pdf"),
            Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo@x"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["orders"],
        metadata={"order": "42"},
    )
    answer = httpx.Response(
        200, json=success(["ann@example.org", "bob@example.org"], ["cat@example.org"],
                          ["dan@example.org"])
    )  # fmt: skip
    result, request = send(message, answer)
    assert request.method == "POST"
    assert request.url.path == "/v3.1/send"
    expected = base64.b64encode(b"mj-public-key-123:mj-secret-key-456").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    body = json.loads(request.content)
    assert list(body) == ["Messages"]
    (msg,) = body["Messages"]
    assert msg["From"] == {"Email": "shop@example.com", "Name": "Shop"}
    assert msg["To"] == [{"Email": "ann@example.org", "Name": "Ann"}, {"Email": "bob@example.org"}]
    assert msg["Cc"] == [{"Email": "cat@example.org"}]
    assert msg["Bcc"] == [{"Email": "dan@example.org"}]
    assert msg["ReplyTo"] == {"Email": "help@example.com", "Name": "Help"}
    assert msg["Subject"] == "Your order"
    assert msg["TextPart"] == "plain"
    assert msg["HTMLPart"].startswith("<p>html")
    assert msg["Headers"] == {"X-Campaign": "spring"}
    assert msg["Attachments"] == [
        {"ContentType": "application/pdf", "Filename": "a.pdf",
         "Base64Content": base64.b64encode(b"%PDF").decode()}
    ]  # fmt: skip
    assert msg["InlinedAttachments"] == [
        {"ContentType": "image/png", "Filename": "logo.png", "ContentID": "logo@x",
         "Base64Content": base64.b64encode(b"PNG").decode()}
    ]  # fmt: skip
    assert msg["CustomCampaign"] == "orders"
    assert json.loads(msg["EventPayload"]) == {
        "order": "42",
        "mailer_message_id": message.message_id,
    }
    assert msg["CustomID"] == message.message_id
    assert "SandboxMode" not in body
    assert result.provider_message_id == "uuid-0"
    assert result.rejected == {}
    assert sorted(result.accepted) == sorted(message.envelope_recipients)


def test_partial_success_fills_rejected() -> None:
    message = Message(sender="s@example.com", to=["a@example.org", "b@example.org"],
                      subject="x", text="t")  # fmt: skip
    result, _ = send(message, httpx.Response(200, json=success(["a@example.org"])))
    assert result.accepted == ["a@example.org"]
    assert list(result.rejected) == ["b@example.org"]


def test_recipient_error_is_recipients_refused() -> None:
    message = Message(sender="s@example.com", to=["a@example.org", "b@example.org"],
                      subject="x", text="t")  # fmt: skip
    answer = httpx.Response(400, json={"Messages": [{"Status": "error", "Errors": [{
        "ErrorIdentifier": "f987", "ErrorCode": "mj-0013", "StatusCode": 400,
        "ErrorMessage": '"b@example.org" is an invalid email address.',
        "ErrorRelatedTo": ["To[1].Email"]}]}]})  # fmt: skip
    with pytest.raises(RecipientsRefused) as info:
        send(message, answer)
    assert list(info.value.refused) == ["b@example.org"]
    assert info.value.code == 400


def test_other_message_error_is_permanent() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(400, json={"Messages": [{"Status": "error", "Errors": [{
        "ErrorCode": "mj-0003", "StatusCode": 400,
        "ErrorMessage": 'Missing mandatory property.',
        "ErrorRelatedTo": ["Subject"]}]}]})  # fmt: skip
    with pytest.raises(PermanentError) as info:
        send(message, answer)
    assert not isinstance(info.value, RecipientsRefused)
    assert "Missing mandatory property" in str(info.value)


def test_sandbox_and_dsn() -> None:
    from urllib.parse import urlsplit

    cfg = MailjetProvider.config_from_url(
        urlsplit("mailjet://k%2Fey:se%2Fcret@default"), {"sandbox": "true"}
    )
    assert cfg == {"api_key": "k/ey", "secret_key": "se/cret", "sandbox": "true"}
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    _, request = send(message, httpx.Response(200, json=success(["a@example.org"])), sandbox=True)
    assert json.loads(request.content)["SandboxMode"] is True


def test_batch_of_messages_in_one_request_with_per_message_results() -> None:
    """v3.1 takes up to 50 Messages; a 400 still reports each one, and only the refused
    one fails."""
    messages = [
        Message(sender="s@example.com", to=[f"r{i}@example.org"], subject=f"m{i}", text="t")
        for i in range(3)
    ]
    ok = [success([f"r{i}@example.org"])["Messages"][0] for i in (0, 2)]
    answer = {"Messages": [ok[0], _mj_error("mj-0013", 400, '"r1@example.org" is an invalid '
              "email address.", "To[0].Email")["Messages"][0], ok[1]]}  # fmt: skip
    provider = MailjetProvider.from_config("mj", CONFIG)

    async def go() -> Any:
        try:
            return await provider.send_batch(messages)
        finally:
            await provider.aclose()

    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(URL).mock(return_value=httpx.Response(400, json=answer))
        outcomes = asyncio.run(go())
    assert route.call_count == 1
    sent = json.loads(route.calls.last.request.content)["Messages"]
    assert [m["CustomID"] for m in sent] == [m.message_id for m in messages]
    assert outcomes[0].accepted == ["r0@example.org"]
    assert isinstance(outcomes[1], RecipientsRefused)
    assert list(outcomes[1].refused) == ["r1@example.org"]
    assert outcomes[2].accepted == ["r2@example.org"]


def test_a_stored_template_goes_as_template_id_and_variables() -> None:
    from mailer import UnsupportedFeature

    provider = MailjetProvider.from_config("mj", {**CONFIG, "templates": {"welcome": "4242"}})
    message = Message(**{"from": "a@example.com", "to": "b@example.org",
                         "template": "welcome", "template_data": {"name": "Ada"}})  # fmt: skip
    [item] = provider.build_request(message).json["Messages"]
    assert item["TemplateID"] == 4242 and item["TemplateLanguage"] is True
    assert item["Variables"] == {"name": "Ada"}
    assert "TextPart" not in item and "Subject" not in item
    named = MailjetProvider.from_config("mj", {**CONFIG, "templates": {"welcome": "w"}})
    with pytest.raises(UnsupportedFeature, match="numeric TemplateID"):
        named.build_request(message)
