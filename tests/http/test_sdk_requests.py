"""Our request is the official SDK's request: SparkPost, MailerSend, Mailtrap, Mandrill.

Real parts: one local HTTPS API (mailer.testing's HTTPTestServer behind a trustme
certificate) that records every request; each ESP's official Python SDK (the ``sdk``
extra: ``sparkpost``, ``mailersend``, ``mailtrap``, ``mailchimp-transactional``) and our
adapter send the same reference messages to it, and the two recorded requests must match:
method, path, the headers that matter (credential, content type) and the JSON body.
The SDK is called the way its README shows, with the message's own fields, so a team
moving from the SDK to us changes nothing on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import Attachment, Message
from mailer.providers import (
    MailerSendProvider,
    MailtrapProvider,
    MandrillProvider,
    SparkPostProvider,
)
from mailer.providers.http import addresses_text
from mailer.providers.http.correlation import CORRELATION_KEY
from mailer.testing import HTTPTestServer, Reply, serve
from mailer.testing._http import HTTPRequest as Recorded

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.anyio

KEY = "sdk-compare-key-5531"
#: the headers whose value must be the same (the rest: User-Agent, Accept-Encoding...)
MATTERS = ("authorization", "content-type")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def reference_messages() -> dict[str, Message]:
    """The messages both sides send: the smallest, and one with every field."""
    return {
        "simple": Message(
            sender="shop@example.com", to=["ann@example.org"], subject="Hi", text="plain"
        ),
        "html only": Message(
            sender="Shop <shop@example.com>", to=["ann@example.org"], subject="Hi", html="<p>hi</p>"
        ),
        "full": Message(
            sender="Shop <shop@example.com>",
            to=["Ann <ann@example.org>", "bob@example.org"],
            cc=["cat@example.org"],
            bcc=["dan@example.org"],
            reply_to=["help@example.com"],
            subject="Your order",
            text="plain",
            html='<p><img src="cid:logo@x"></p>',
            attachments=[
                Attachment(content=b"%PDF-1.4", filename="invoice.pdf"),
                Attachment(content=b"PNG", filename="logo.png", inline=True, content_id="logo@x"),
            ],
            headers={"X-Campaign": "spring"},
            tags=["orders"],
            metadata={"order_id": "42"},
        ),
    }


def _answer(request: Recorded) -> Reply:
    """A success in each API's own shape, so that no SDK raises."""
    path = request.path
    if path.startswith("/api/v1/transmissions"):
        return Reply(200, {"results": {"id": "sp-1", "total_accepted_recipients": 1,
                                       "total_rejected_recipients": 0}})  # fmt: skip
    if path == "/v1/bulk-email":
        return Reply(202, {"message": "The bulk email is being processed.",
                           "bulk_email_id": "bulk-1"})  # fmt: skip
    if path.startswith("/v1/bulk-email/"):
        return Reply(200, {"data": {"id": "bulk-1", "state": "completed",
                                    "validation_errors": None,
                                    "messages_id": ["ms-1", "ms-2", "ms-3"]}})  # fmt: skip
    if path.startswith("/v1/email"):
        return Reply(202, {}, headers={"X-Message-Id": "ms-1"})
    if path.startswith("/api/send"):
        return Reply(200, {"success": True, "message_ids": ["mt-1"]})
    if path.startswith("/api/1.3/messages/send"):
        return Reply(200, [{"email": "ann@example.org", "status": "sent", "_id": "md-1",
                            "reject_reason": None}])  # fmt: skip
    return Reply(404, {"message": "unknown path"})


@pytest.fixture
async def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[HTTPTestServer, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # the SDKs all use requests
    async with serve("ok", tls=context, respond=_answer) as server:
        yield server, ca_file


def _same(ours: Recorded, theirs: Recorded) -> None:
    assert (ours.method, ours.path) == (theirs.method, theirs.path)
    for name in MATTERS:
        assert (
            ours.headers.get(name, "").split(";")[0] == theirs.headers.get(name, "").split(";")[0]
        ), name
    assert json.loads(ours.body) == json.loads(theirs.body)


async def _compare(server: HTTPTestServer, provider: Any, message: Message,
                   sdk: Callable[[], Any]) -> tuple[Recorded, Recorded]:  # fmt: skip
    try:
        await provider.send(message)
    finally:
        await provider.aclose()
    await asyncio.to_thread(sdk)
    assert len(server.log) == 2
    ours, theirs = server.log
    _same(ours, theirs)
    return ours, theirs


def _config(server: HTTPTestServer, ca_file: Path, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "ca_file": str(ca_file), **extra}


def _metadata(message: Message) -> dict[str, str]:
    """The metadata a sender through the SDK adds too: the correlation key that brings
    the ESP's events back to the message (docs/events.md)."""
    return {**message.metadata, CORRELATION_KEY: message.message_id or ""}


def _files(message: Message, *, inline: bool) -> list[Attachment]:
    return [a for a in message.attachments if a.inline == inline]


# -- SparkPost: python-sparkpost ------------------------------------------------------


def sparkpost_sdk(port: int, message: Message) -> Callable[[], Any]:
    from sparkpost import SparkPost

    def call() -> Any:
        client = SparkPost(KEY, base_uri=f"127.0.0.1:{port}")
        recipients: list[Any] = [str(a) for a in message.to]
        if message.tags:  # SparkPost's tags are per recipient
            recipients = [{"address": {"email": a.email, **({"name": a.name} if a.name else {})},
                           "tags": list(message.tags)} for a in message.to]  # fmt: skip
        kw: dict[str, Any] = {"recipients": recipients, "from_email": str(message.sender),
                              "subject": message.subject}  # fmt: skip
        if message.cc:
            kw["cc"] = [str(a) for a in message.cc]
        if message.bcc:
            kw["bcc"] = [str(a) for a in message.bcc]
        if message.text is not None or message.html is None:
            kw["text"] = message.text or ""
        if message.html is not None:
            kw["html"] = message.html
        if message.reply_to:
            kw["reply_to"] = addresses_text(message.reply_to)
        kw["custom_headers"] = {**message.headers, "Message-ID": message.message_id}
        files = [{"type": a.mime_type(), "name": a.filename, "data": _b64(a.data())}
                 for a in _files(message, inline=False)]  # fmt: skip
        if files:
            kw["attachments"] = files
        images = [{"type": a.mime_type(), "name": a.content_id, "data": _b64(a.data())}
                  for a in _files(message, inline=True)]  # fmt: skip
        if images:
            kw["inline_images"] = images
        kw["metadata"] = _metadata(message)
        return client.transmissions.send(**kw)

    return call


@pytest.mark.parametrize("name", list(reference_messages()))
async def test_sparkpost_matches_sdk(api: Any, name: str) -> None:
    server, ca_file = api
    message = reference_messages()[name]
    provider = SparkPostProvider.from_config("sp", _config(server, ca_file, api_key=KEY))
    ours, _ = await _compare(server, provider, message, sparkpost_sdk(server.port, message))
    assert ours.path == "/api/v1/transmissions"
    assert ours.headers["authorization"] == KEY


async def test_sparkpost_eu_region_is_the_sdks_eu_host() -> None:
    from sparkpost import EU_API

    provider = SparkPostProvider.from_config("sp", {"api_key": KEY, "region": "eu"})
    assert provider.base_url == f"https://{EU_API}"


# -- MailerSend: mailersend 2.x (EmailRequest, as EmailBuilder builds it) -----------------


def mailersend_request(message: Message) -> Any:
    """The SDK's EmailRequest for ``message``, as its EmailBuilder builds it."""
    from mailersend.models.email import (
        EmailAttachment,
        EmailContact,
        EmailHeader,
        EmailRequest,
    )

    def contact(a: Any) -> EmailContact:
        return EmailContact(email=a.email, name=a.name or None)

    attachments = [
        EmailAttachment(
            content=_b64(a.data()),
            filename=a.filename or "",
            disposition="inline" if a.inline else "attachment",
            id=a.content_id if a.inline else None,
        )
        for a in message.attachments
    ]
    return EmailRequest(
        from_email=contact(message.sender),
        to=[contact(a) for a in message.to],
        cc=[contact(a) for a in message.cc] or None,
        bcc=[contact(a) for a in message.bcc] or None,
        reply_to=contact(message.reply_to[0]) if message.reply_to else None,
        subject=message.subject,
        text=message.text if message.text is not None or message.html is None else None,
        html=message.html,
        attachments=attachments or None,
        tags=list(message.tags) or None,
        headers=[EmailHeader(name=k, value=v) for k, v in message.headers.items()] or None,
    )


def mailersend_sdk(base_url: str, message: Message) -> Callable[[], Any]:
    from mailersend import MailerSendClient

    def call() -> Any:
        client = MailerSendClient(api_key=KEY, base_url=f"{base_url}/v1/", max_retries=0)
        return client.emails.send(mailersend_request(message))

    return call


@pytest.mark.parametrize("name", list(reference_messages()))
async def test_mailersend_matches_sdk(api: Any, name: str) -> None:
    server, ca_file = api
    message = reference_messages()[name]
    if message.metadata:  # MailerSend has no metadata: refused (test_mailersend.py)
        message = message.model_copy(update={"metadata": {}})
    provider = MailerSendProvider.from_config("ms", _config(server, ca_file, api_key=KEY))
    ours, _ = await _compare(server, provider, message, mailersend_sdk(server.base_url, message))
    assert ours.path == "/v1/email"
    assert ours.headers["authorization"] == f"Bearer {KEY}"


async def test_mailersend_bulk_matches_sdk(api: Any) -> None:
    """``send_batch`` with ``bulk = true`` posts what the SDK's ``emails.send_bulk`` posts
    for the same messages (then polls the status, which the SDK leaves to its caller)."""
    from mailersend import MailerSendClient

    server, ca_file = api
    batch = [m.model_copy(update={"metadata": {}}) for m in reference_messages().values()]
    provider = MailerSendProvider.from_config(
        "ms", _config(server, ca_file, api_key=KEY, bulk=True, bulk_wait=5)
    )
    try:
        outcomes = await provider.send_batch(batch)
    finally:
        await provider.aclose()
    assert [o.provider_message_id for o in outcomes] == ["ms-1", "ms-2", "ms-3"]  # type: ignore[union-attr]

    def sdk() -> Any:
        client = MailerSendClient(api_key=KEY, base_url=f"{server.base_url}/v1/", max_retries=0)
        return client.emails.send_bulk([mailersend_request(m) for m in batch])

    await asyncio.to_thread(sdk)
    posts = [r for r in server.log if r.method == "POST"]
    assert len(posts) == 2 and posts[0].path == "/v1/bulk-email"
    _same(*posts)


# -- Mailtrap: mailtrap 2.x ---------------------------------------------------------------


def mailtrap_sdk(port: int, message: Message, **client: Any) -> Callable[[], Any]:
    import mailtrap
    from mailtrap.models.mail import Address, Attachment, Disposition, Mail

    def address(a: Any) -> Address:
        return Address(email=a.email, name=a.name or None)

    def call() -> Any:
        sdk = mailtrap.MailtrapClient(token=KEY, api_host=f"127.0.0.1:{port}", **client)
        files = [
            Attachment(
                content=_b64(a.data()).encode(),
                filename=a.filename or "",
                disposition=Disposition.INLINE if a.inline else Disposition.ATTACHMENT,
                mimetype=a.mime_type(),
                content_id=a.content_id if a.inline else None,
            )
            for a in message.attachments
        ]
        mail = Mail(
            sender=address(message.sender),
            to=[address(a) for a in message.to],
            cc=[address(a) for a in message.cc] or None,
            bcc=[address(a) for a in message.bcc] or None,
            reply_to=address(message.reply_to[0]) if message.reply_to else None,
            subject=message.subject,
            text=message.text if message.text is not None or message.html is None else None,
            html=message.html,
            category=message.tags[0] if message.tags else None,
            headers={**message.headers, "Message-ID": message.message_id or ""},
            custom_variables=_metadata(message),
            attachments=files or None,
        )
        return sdk.send(mail)

    return call


@pytest.mark.parametrize("name", list(reference_messages()))
async def test_mailtrap_matches_sdk(api: Any, name: str) -> None:
    server, ca_file = api
    message = reference_messages()[name]
    provider = MailtrapProvider.from_config("mt", _config(server, ca_file, api_token=KEY))
    ours, _ = await _compare(server, provider, message, mailtrap_sdk(server.port, message))
    assert ours.path == "/api/send"


async def test_mailtrap_sandbox_matches_sdk(api: Any) -> None:
    server, ca_file = api
    message = reference_messages()["simple"]
    provider = MailtrapProvider.from_config(
        "mt", _config(server, ca_file, api_token=KEY, sandbox=True, inbox_id=2024)
    )
    sdk = mailtrap_sdk(server.port, message, sandbox=True, inbox_id="2024")
    ours, _ = await _compare(server, provider, message, sdk)
    assert ours.path == "/api/send/2024"


def test_mailtrap_hosts_are_the_sdks() -> None:
    from mailtrap.config import BULK_HOST, SANDBOX_HOST, SENDING_HOST

    live = MailtrapProvider.from_config("mt", {"api_token": KEY})
    bulk = MailtrapProvider.from_config("mt", {"api_token": KEY, "bulk": True})
    sandbox = MailtrapProvider.from_config("mt", {"api_token": KEY, "sandbox": True,
                                                  "inbox_id": 7})  # fmt: skip
    assert live.base_url == f"https://{SENDING_HOST}"
    assert bulk.base_url == f"https://{BULK_HOST}"
    assert sandbox.base_url == f"https://{SANDBOX_HOST}"


# -- Mandrill: mailchimp-transactional -----------------------------------------------------


def mandrill_message(message: Message) -> dict[str, Any]:
    """The message object as Mandrill's API reference documents it."""
    assert message.sender is not None
    out: dict[str, Any] = {"from_email": message.sender.email, "subject": message.subject,
                           "preserve_recipients": True}  # fmt: skip
    if message.sender.name:
        out["from_name"] = message.sender.name
    out["to"] = [{"email": a.email, "type": kind, **({"name": a.name} if a.name else {})}
                 for kind, group in (("to", message.to), ("cc", message.cc),
                                     ("bcc", message.bcc)) for a in group]  # fmt: skip
    if message.text is not None or message.html is None:
        out["text"] = message.text or ""
    if message.html is not None:
        out["html"] = message.html
    headers = {**message.headers, "Message-ID": message.message_id}
    if message.reply_to:
        headers["Reply-To"] = addresses_text(message.reply_to)
    out["headers"] = headers
    files = [{"type": a.mime_type(), "name": a.filename, "content": _b64(a.data())}
             for a in _files(message, inline=False)]  # fmt: skip
    if files:
        out["attachments"] = files
    images = [{"type": a.mime_type(), "name": a.content_id, "content": _b64(a.data())}
              for a in _files(message, inline=True)]  # fmt: skip
    if images:
        out["images"] = images
    if message.tags:
        out["tags"] = list(message.tags)
    out["metadata"] = _metadata(message)
    return out


def mandrill_sdk(base_url: str, message: Message) -> Callable[[], Any]:
    import mailchimp_transactional

    def call() -> Any:
        client = mailchimp_transactional.Client(KEY)
        client.api_client.host = f"{base_url}/api/1.3"
        return client.messages.send({"message": mandrill_message(message)})

    return call


@pytest.mark.parametrize("name", list(reference_messages()))
async def test_mandrill_matches_sdk(api: Any, name: str) -> None:
    server, ca_file = api
    message = reference_messages()[name]
    provider = MandrillProvider.from_config("md", _config(server, ca_file, api_key=KEY))
    ours, _ = await _compare(server, provider, message, mandrill_sdk(server.base_url, message))
    assert ours.path == "/api/1.3/messages/send.json"
    assert json.loads(ours.body)["key"] == KEY
    assert "authorization" not in ours.headers


def test_mandrill_default_host_is_the_sdks() -> None:
    from mailchimp_transactional.api_client import ApiClient

    provider = MandrillProvider.from_config("md", {"api_key": KEY})
    assert provider.base_url + "/api/1.3" == ApiClient().host
