"""The request each adapter sends is the one the ESP's official Python SDK sends for the
same reference messages (Azure, Scaleway), or its documented example (Postal and
Unisender Go have no SDK): method, path and query, the headers that matter, the JSON body.

Both sides are captured by one loopback server (``mailer.testing.HTTPTestServer``), the
SDKs' synchronous clients running in a thread beside it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from mailer import Attachment, Message
from mailer.providers._azure import AzureProvider, content_sha256, operation_id, signature
from mailer.providers._postal import PostalProvider
from mailer.providers._scaleway import ScalewayProvider
from mailer.providers._unisender_go import UnisenderGoProvider
from mailer.testing import HTTPRequest, HTTPTestServer, Reply, serve

pytestmark = pytest.mark.anyio

PROJECT = "6a7a4d0e-3c6a-4d39-8d57-2f0c4a7b9e11"
SCW_SECRET = "11111111-2222-4333-8444-555555555555"
AZURE_KEY = base64.b64encode(b"azure-sdk-comparison-secret-32by").decode()

#: the reference messages: the simplest one, and one using every field both APIs carry
SIMPLE: dict[str, Any] = {
    "sender": "shop@example.com",
    "to": ["ann@example.org"],
    "subject": "Your order",
    "text": "Thanks for your order.",
}
FULL: dict[str, Any] = {
    "sender": "shop@example.com",
    "to": ["Ann Example <ann@example.org>", "bob@example.org"],
    "cc": ["Cat <cat@example.org>"],
    "bcc": ["dan@example.org"],
    "reply_to": ["Help Desk <help@example.com>"],
    "subject": "Your order 42",
    "text": "Thanks for your order.",
    "html": "<p>Thanks for your <b>order</b>.</p>",
    "headers": {"X-Order": "42"},
    "attachments": [Attachment(content=b"%PDF-1.4 invoice", filename="invoice.pdf")],
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _capture(server: HTTPTestServer, call: Callable[[], Any]) -> HTTPRequest:
    """The one request ``call`` (a blocking SDK call) makes to ``server``."""
    before = len(server.log)
    await asyncio.wait_for(asyncio.to_thread(call), timeout=20)
    assert len(server.log) == before + 1
    return server.log[-1]


async def _ours(server: HTTPTestServer, provider: Any, message: Message) -> HTTPRequest:
    before = len(server.log)
    try:
        await provider.send(message)
    finally:
        await provider.aclose()
    assert len(server.log) == before + 1
    return server.log[-1]


def _media_type(request: HTTPRequest) -> str:
    return request.headers["content-type"].split(";")[0].strip()


# -- Azure: azure-communication-email -----------------------------------------------------


def _azure_reply(request: HTTPRequest) -> Reply:
    return Reply(
        202, {"id": request.headers.get("operation-id", "op"), "status": "Running", "error": None}
    )


def _azure_sdk_message(data: dict[str, Any]) -> dict[str, Any]:
    """The reference message as the SDK's README writes one (a plain dict)."""

    def address(text: str) -> dict[str, str]:
        name, sep, rest = text.rpartition(" <")
        return {"address": rest.rstrip(">"), "displayName": name} if sep else {"address": text}

    out: dict[str, Any] = {
        "senderAddress": data["sender"],
        "content": {"subject": data["subject"], "plainText": data["text"]},
        "recipients": {"to": [address(a) for a in data["to"]]},
    }
    if "html" in data:
        out["content"]["html"] = data["html"]
    for kind in ("cc", "bcc"):
        if kind in data:
            out["recipients"][kind] = [address(a) for a in data[kind]]
    if "reply_to" in data:
        out["replyTo"] = [address(a) for a in data["reply_to"]]
    if "headers" in data:
        out["headers"] = dict(data["headers"])
    if "attachments" in data:
        out["attachments"] = [
            {"name": a.filename, "contentType": a.mime_type(), "contentInBase64": _b64(a.data())}
            for a in data["attachments"]
        ]
    return out


@pytest.mark.parametrize("reference", [SIMPLE, FULL], ids=["simple", "full"])
async def test_azure_request_is_the_sdks(reference: dict[str, Any]) -> None:
    sdk = pytest.importorskip("azure.communication.email")
    from azure.core.credentials import AzureKeyCredential

    message = Message(**reference)
    async with serve(respond=_azure_reply) as server:
        client = sdk.EmailClient(server.base_url, AzureKeyCredential(AZURE_KEY))
        theirs = await _capture(
            server,
            lambda: client.begin_send(
                _azure_sdk_message(reference), operation_id=operation_id(message), polling=False
            ).result(),
        )
        provider = AzureProvider.from_config(
            "azure", {"endpoint": server.base_url, "access_key": AZURE_KEY}
        )
        ours = await _ours(server, provider, message)
    assert (ours.method, ours.path) == (theirs.method, theirs.path)
    assert ours.path == "/emails:send?api-version=2025-09-01"
    assert ours.json() == theirs.json()
    for name in ("operation-id", "accept", "x-ms-return-client-request-id"):
        assert ours.headers[name] == theirs.headers[name], name
    assert _media_type(ours) == _media_type(theirs) == "application/json"
    # the signature: the SDK's is exactly what our signer makes from its own inputs, and
    # ours is valid for the body we sent (the JSON spacing differs: each hashes its own)
    key = base64.b64decode(AZURE_KEY)
    host = f"127.0.0.1:{server.port}"
    for request in (theirs, ours):
        digest = request.headers["x-ms-content-sha256"]
        assert digest == content_sha256(request.body)
        expected = signature(key, "POST", request.path, request.headers["x-ms-date"], host, digest)
        assert request.headers["authorization"] == (
            f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={expected}"
        )
    assert AZURE_KEY not in ours.headers["authorization"]


# -- Scaleway: scaleway (scaleway-core) ---------------------------------------------------


def _scaleway_reply(request: HTTPRequest) -> Reply:
    body = request.json()
    emails = []
    for kind in ("to", "cc", "bcc"):
        for rcpt in body.get(kind, []):
            emails.append(
                {
                    "id": f"id-{rcpt['email']}",
                    "message_id": "msg-1",
                    "project_id": PROJECT,
                    "mail_from": body["from"]["email"],
                    "rcpt_to": rcpt["email"],
                    "mail_rcpt": rcpt["email"],
                    "rcpt_type": kind,
                    "subject": body["subject"],
                    "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z",
                    "status": "new",
                    "status_details": None,
                    "try_count": 0,
                    "last_tries": [],
                    "flags": [],
                }
            )
    return Reply(200, {"emails": emails})


def _scaleway_sdk_call(client: Any, data: dict[str, Any]) -> Callable[[], Any]:
    """The reference message through ``TemV1Alpha1API.create_email``."""
    from scaleway.tem.v1alpha1 import (
        CreateEmailRequestAddress,
        CreateEmailRequestAttachment,
        CreateEmailRequestHeader,
        TemV1Alpha1API,
    )

    def address(text: str) -> CreateEmailRequestAddress:
        name, sep, rest = text.rpartition(" <")
        if sep:
            return CreateEmailRequestAddress(email=rest.rstrip(">"), name=name)
        return CreateEmailRequestAddress(email=text)

    headers = [CreateEmailRequestHeader(key="Reply-To", value=r) for r in data.get("reply_to", [])]
    headers += [
        CreateEmailRequestHeader(key=k, value=v) for k, v in data.get("headers", {}).items()
    ]
    kwargs: dict[str, Any] = {
        "from_": address(data["sender"]),
        "subject": data["subject"],
        "text": data["text"],
        "to": [address(a) for a in data["to"]],
        "project_id": PROJECT,
        "region": "fr-par",
    }
    if "html" in data:
        kwargs["html"] = data["html"]
    for kind in ("cc", "bcc"):
        if kind in data:
            kwargs[kind] = [address(a) for a in data[kind]]
    if headers:
        kwargs["additional_headers"] = headers
    if "attachments" in data:
        kwargs["attachments"] = [
            CreateEmailRequestAttachment(
                name=a.filename, type_=a.mime_type(), content=_b64(a.data())
            )
            for a in data["attachments"]
        ]
    api = TemV1Alpha1API(client)
    return lambda: api.create_email(**kwargs)


#: the SDK's create_email requires both bodies (the API does not: we send what there is)
SIMPLE_BOTH = {**SIMPLE, "html": "<p>Thanks for your order.</p>"}


@pytest.mark.parametrize("reference", [SIMPLE_BOTH, FULL], ids=["simple", "full"])
async def test_scaleway_request_is_the_sdks(reference: dict[str, Any]) -> None:
    pytest.importorskip("scaleway.tem.v1alpha1")
    from scaleway import Client

    async with serve(respond=_scaleway_reply) as server:
        client = Client(
            access_key="SCWABCDEFGHIJKLMNOPQ",
            secret_key=SCW_SECRET,
            default_project_id=PROJECT,
            default_region="fr-par",
            api_url=server.base_url,
        )
        theirs = await _capture(server, _scaleway_sdk_call(client, reference))
        provider = ScalewayProvider.from_config(
            "scaleway",
            {
                "secret_key": SCW_SECRET,
                "project_id": PROJECT,
                "base_url": server.base_url,
            },
        )
        # the Reply-To header goes first in the SDK call: so in the message's walk
        ours = await _ours(server, provider, Message(**reference))
    assert (ours.method, ours.path) == (theirs.method, theirs.path)
    assert ours.path == "/transactional-email/v1alpha1/regions/fr-par/emails"
    assert ours.json() == theirs.json()
    assert ours.headers["x-auth-token"] == theirs.headers["x-auth-token"] == SCW_SECRET
    assert ours.headers["accept"] == theirs.headers["accept"]
    assert _media_type(ours) == _media_type(theirs) == "application/json"


# -- Postal and Unisender Go: their documented examples ------------------------------------

#: Postal's documented send/message body (docs.postalserver.io/developer/api and its API
#: reference: to/cc/bcc arrays, from, reply_to, subject, tag, plain_body, html_body,
#: attachments of name/content_type/data, headers), for the FULL message with one tag
POSTAL_EXAMPLE = {
    "to": ["Ann Example <ann@example.org>", "bob@example.org"],
    "cc": ["Cat <cat@example.org>"],
    "bcc": ["dan@example.org"],
    "from": "shop@example.com",
    "reply_to": "Help Desk <help@example.com>",
    "subject": "Your order 42",
    "tag": "orders",
    "plain_body": "Thanks for your order.",
    "html_body": "<p>Thanks for your <b>order</b>.</p>",
    "attachments": [
        {
            "name": "invoice.pdf",
            "content_type": "application/pdf",
            "data": _b64(b"%PDF-1.4 invoice"),
        },
    ],
    "headers": {"X-Order": "42"},
}


def _postal_reply(request: HTTPRequest) -> Reply:
    return Reply(
        200,
        {
            "status": "success",
            "time": 0.01,
            "flags": {},
            "data": {"message_id": "abc@rp.postal.example.com", "messages": {}},
        },
    )


async def test_postal_request_is_the_documented_example() -> None:
    async with serve(respond=_postal_reply) as server:
        provider = PostalProvider.from_config(
            "postal", {"server_key": "postal-key", "base_url": server.base_url}
        )
        result_request = await _ours(server, provider, Message(**FULL, tags=["orders"]))
    assert (result_request.method, result_request.path) == ("POST", "/api/v1/send/message")
    assert result_request.headers["x-server-api-key"] == "postal-key"
    assert _media_type(result_request) == "application/json"
    assert result_request.json() == POSTAL_EXAMPLE


#: Unisender Go's documented email/send example (godocs.unisender.ru/web-api-ref#email-send),
#: with the values of a To-only reference message (Unisender Go has no Cc or Bcc)
UNISENDER_EXAMPLE = {
    "message": {
        "recipients": [
            {"email": "ann@example.org", "substitutions": {"to_name": "Ann Example"}},
            {"email": "bob@example.org"},
        ],
        "tags": ["orders"],
        "body": {"html": '<p>Hi <img src="cid:logo"></p>', "plaintext": "Hi"},
        "subject": "Your order 42",
        "from_email": "shop@example.com",
        "from_name": "Shop",
        "reply_to": "help@example.com",
        "reply_to_name": "Help Desk",
        "headers": {"X-Order": "42"},
        "attachments": [
            # the one departure: a text attachment names its charset (Attachment.mime_type,
            # as every adapter sends it), where the example writes a bare "text/plain"
            {
                "type": "text/plain; charset=utf-8",
                "name": "readme.txt",
                "content": "SGVsbG8sIHdvcmxkIQ==",
            }
        ],
        "inline_attachments": [
            {
                "type": "image/gif",
                "name": "logo",
                "content": "R0lGODdhAwAEAPAAAP8AAAAAACwAAAAAAwAEAAACBIRvcgUAOw==",
            }
        ],
        "global_metadata": {"order_id": "42"},
    }
}


async def test_unisender_go_request_is_the_documented_example() -> None:
    gif = base64.b64decode("R0lGODdhAwAEAPAAAP8AAAAAACwAAAAAAwAEAAACBIRvcgUAOw==")
    message = Message(
        sender="Shop <shop@example.com>",
        to=["Ann Example <ann@example.org>", "bob@example.org"],
        reply_to=["Help Desk <help@example.com>"],
        subject="Your order 42",
        text="Hi",
        html='<p>Hi <img src="cid:logo"></p>',
        headers={"X-Order": "42"},
        attachments=[
            Attachment(content=b"Hello, world!", filename="readme.txt", content_type="text/plain"),
            Attachment(
                content=gif,
                filename="logo.gif",
                content_type="image/gif",
                inline=True,
                content_id="logo",
            ),
        ],
        tags=["orders"],
        metadata={"order_id": "42"},
    )
    reply = Reply(
        200,
        {
            "status": "success",
            "job_id": "1ZymBc-00041N-9X",
            "emails": ["ann@example.org", "bob@example.org"],
        },
    )
    async with serve(respond=lambda request: reply) as server:
        provider = UnisenderGoProvider.from_config(
            "unisendergo", {"api_key": "ug-key", "base_url": server.base_url}
        )
        request = await _ours(server, provider, message)
    assert (request.method, request.path) == ("POST", "/email/send.json")
    assert request.headers["x-api-key"] == "ug-key"
    assert _media_type(request) == "application/json"
    expected = json.loads(json.dumps(UNISENDER_EXAMPLE))
    try:  # the events work's correlation key rides in the metadata, where it exists
        from mailer.providers.http.correlation import CORRELATION_KEY
    except ImportError:
        pass
    else:
        expected["message"]["global_metadata"][CORRELATION_KEY] = message.message_id
    assert json.loads(request.body) == expected
