"""Mailgun /v3/{domain}/messages: multipart fields for each Message feature, regions."""

from __future__ import annotations

import base64
from email.message import Message as MimePart
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from mailer import Attachment, ConfigError, Message, MessageError
from mailer.providers._mailgun import MailgunProvider
from mailer.testing import Reply, serve

pytestmark = pytest.mark.anyio

KEY = "key-mailgun-secret"
URL = "https://api.mailgun.net/v3/mg.example.com/messages"


def make(**config: Any) -> MailgunProvider:
    return MailgunProvider.from_config("mailgun", {"api_key": KEY, "domain": "mg.example.com",
                                                    **config})  # fmt: skip


def form_parts(request: httpx.Request) -> list[MimePart]:
    """The multipart body as parts, read by the stdlib parser (not by our own code)."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    parsed = BytesParser(policy=HTTP).parsebytes(head + request.content)
    assert parsed.is_multipart()
    return list(parsed.iter_parts())


def fields(request: httpx.Request) -> list[tuple[str, str]]:
    return [
        (p.get_param("name", header="content-disposition"), p.get_content())
        for p in form_parts(request)
        if p.get_filename() is None
    ]


async def test_request_shape(stubbed: Any) -> None:
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann <ann@example.org>", "bob@example.org"],
        cc=["cat@example.org"],
        bcc=["dan@example.org"],
        reply_to=["help@example.com", "desk@example.com"],
        subject="Your order",
        text="plain",
        html='<p><img src="cid:logo@x"></p>',
        attachments=[
            Attachment(content=b"%PDF-1", filename="invoice.pdf"),
            Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo@x"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["orders", "eu"],
        metadata={"order_id": "42"},
    )
    answer = httpx.Response(200, json={"id": "<2024.1@mg.example.com>", "message": "Queued."})
    sent = await stubbed(make(), message, "POST", URL, answer)
    request = sent.request
    assert request.method == "POST"
    assert request.url.path == "/v3/mg.example.com/messages"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    expected = base64.b64encode(f"api:{KEY}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert fields(request) == [
        ("from", "Shop <shop@example.com>"),
        ("subject", "Your order"),
        ("to", "Ann <ann@example.org>"),
        ("to", "bob@example.org"),
        ("cc", "cat@example.org"),
        ("bcc", "dan@example.org"),
        ("h:Reply-To", "help@example.com, desk@example.com"),
        ("text", "plain"),
        ("html", '<p><img src="cid:logo@x"></p>'),
        ("h:X-Campaign", "spring"),
        ("h:Message-ID", message.message_id),
        ("o:tag", "orders"),
        ("o:tag", "eu"),
        ("v:order_id", "42"),
        ("v:mailer_message_id", message.message_id),  # the correlation key
    ]
    files = [
        (p.get_param("name", header="content-disposition"), p.get_filename(),
         p.get_content_type(), p.get_payload(decode=True))
        for p in form_parts(request) if p.get_filename() is not None
    ]  # fmt: skip
    assert files == [
        ("attachment", "invoice.pdf", "application/pdf", b"%PDF-1"),
        ("inline", "logo@x", "image/png", b"PNG"),  # Mailgun's Content-ID is the filename
    ]
    assert sent.result.provider_message_id == "<2024.1@mg.example.com>"


async def test_eu_region_and_base_url(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    eu = "https://api.eu.mailgun.net/v3/mg.example.com/messages"
    sent = await stubbed(make(region="eu"), message, "POST", eu, httpx.Response(200, json={}))
    assert sent.result is not None
    local = "http://127.0.0.1:9/v3/mg.example.com/messages"
    sent = await stubbed(make(region="eu", base_url="http://127.0.0.1:9"), message, "POST",
                         local, httpx.Response(200, json={"id": "<x@y>"}))  # fmt: skip
    assert sent.result.provider_message_id == "<x@y>"


async def test_more_than_three_tags_is_unsupported() -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      tags=["a", "b", "c", "d"])  # fmt: skip
    with pytest.raises(MessageError, match="more than 3 tags"):
        await make().send(message)


async def test_forbidden_plain_text_body(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    sent = await stubbed(make(), message, "POST", URL, httpx.Response(401, text="Forbidden"))
    assert sent.error.code == 401
    assert "Forbidden" in str(sent.error)
    assert KEY not in str(sent.error)


async def test_verify_gets_the_domain() -> None:
    """What a real server received: one authenticated GET of this domain's record."""
    async with serve("ok", respond=lambda request: Reply(200, {"domain": {}})) as api:
        provider = make(base_url=api.base_url)
        try:
            await provider.verify()
        finally:
            await provider.aclose()
    assert [(r.method, r.path) for r in api.log] == [("GET", "/v3/domains/mg.example.com")]
    expected = base64.b64encode(f"api:{KEY}".encode()).decode()
    assert api.log[0].headers["authorization"] == f"Basic {expected}"


def test_config_and_dsn() -> None:
    cfg = MailgunProvider.config_from_url(urlsplit("mailgun://key-1:mg.example.com@default"),
                                          {"region": "eu"})  # fmt: skip
    assert cfg == {"api_key": "key-1", "domain": "mg.example.com", "region": "eu"}
    assert MailgunProvider.from_config("m", cfg).base_url == "https://api.eu.mailgun.net"
    with pytest.raises(ConfigError):
        make(region="asia")
    with pytest.raises(ConfigError):
        make(domain="mg.example.com/../x")
    with pytest.raises(ConfigError):
        MailgunProvider.config_from_url(urlsplit("mailgun://key-only@default"), {})
