"""SparkPost, MailerSend, Mailtrap and Mandrill webhooks through uvicorn on 127.0.0.1: each ESP's
documented event shapes, authenticated as the ESP does it, stored with the right fields
(our Message-ID from the correlation key where the ESP echoes metadata); a forged post
is refused (401) with nothing stored; a repeated post is applied once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from mailer import ConfigError, Mailer
from mailer.providers import (
    MailerSendProvider,
    MailtrapProvider,
    MandrillProvider,
    SparkPostProvider,
)
from mailer.providers._mandrill_webhook import signature
from mailer.webhooks import asgi_app

from .conftest import asgi_server

pytestmark = pytest.mark.anyio

MID = "<m7@app.example.com>"
BASIC = "hooks:sp-basic-secret"
MS_SECRET = "ms-signing-secret-42"
MD_KEY = "md-webhook-key-42"
MT_SECRET = "mt-signing-secret-42"


def providers(url: str) -> list[Any]:
    return [
        SparkPostProvider.from_config("sp", {"api_key": "sp-k",
                                             "webhook": {"basic_auth": BASIC}}),
        MailerSendProvider.from_config("ms", {"api_key": "ms-k",
                                              "webhook": {"signing_secret": MS_SECRET}}),
        MailtrapProvider.from_config("mt", {"api_token": "mt-k",
                                            "webhook": {"signing_secret": MT_SECRET}}),
        MandrillProvider.from_config("md", {"api_key": "md-k",
                                            "webhook": {"key": MD_KEY, "url": f"{url}/md"}}),
    ]  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Mailer, str]]:
    store = {"store": f"sqlite:///{tmp_path / 'mail.db'}"}
    # the Mandrill signature covers the URL, known once the server listens: build the
    # app on a Mailer made after, through a holder the app reads from
    holder: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await holder["app"](scope, receive, send)
            return
        for _ in range(2):  # startup, then shutdown: the Mailer is opened by the test
            message = await receive()
            await send({"type": message["type"] + ".complete"})

    async with asgi_server(app) as url, Mailer(providers(url), suppression=store) as mailer:
        holder["app"] = asgi_app(mailer)
        yield mailer, url


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=body, headers=headers)


# -- SparkPost: Basic auth, [{"msys": {...}}] ------------------------------------------------


def sparkpost_events() -> list[dict[str, Any]]:
    common = {"rcpt_to": "ann@example.org", "transmission_id": "65832150921904138",
              "rcpt_meta": {"mailer_message_id": MID}, "timestamp": "1460989507"}  # fmt: skip
    return [
        {"msys": {"message_event": {**common, "type": "delivery", "event_id": "e-1"}}},
        {
            "msys": {
                "message_event": {
                    **common,
                    "type": "bounce",
                    "event_id": "e-2",
                    "bounce_class": "10",
                    "raw_reason": "550 5.1.1 user unknown",
                }
            }
        },
        {"msys": {"track_event": {**common, "type": "click", "event_id": "e-3"}}},
        {"msys": {}},  # SparkPost's test post
    ]


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
            "Content-Type": "application/json"}  # fmt: skip


async def test_sparkpost_events_are_stored(served: tuple[Mailer, str]) -> None:
    mailer, url = served
    body = json.dumps(sparkpost_events()).encode()
    response = await post(f"{url}/sp", body, basic(BASIC))
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 3, "duplicates": 0}
    again = await post(f"{url}/sp", body, basic(BASIC))
    assert again.json() == {"stored": 0, "duplicates": 3}
    events = await mailer.delivery_events(MID)
    assert [e.type for e in events] == ["delivered", "bounced", "clicked"]
    bounce = events[1]
    assert (bounce.bounce, bounce.reason) == ("hard", "550 5.1.1 user unknown")
    assert bounce.provider_message_id == "65832150921904138"
    assert bounce.timestamp.timestamp() == 1460989507
    assert await mailer.suppression.get("ann@example.org") is not None


async def test_sparkpost_wrong_credentials_are_refused(served: tuple[Mailer, str]) -> None:
    mailer, url = served
    body = json.dumps(sparkpost_events()).encode()
    response = await post(f"{url}/sp", body, basic("hooks:wrong"))
    assert response.status_code == 401
    assert "sp-basic-secret" not in response.text
    assert await mailer.delivery_events(MID) == []


# -- MailerSend: Signature = hex HMAC-SHA256 of the body -------------------------------------


def mailersend_event(kind: str, event_id: str) -> dict[str, Any]:
    return {
        "type": kind, "domain_id": "7z3m5jgrogdpyo6n", "created_at": "2024-01-05T10:12:00Z",
        "webhook_id": "7z3m5jgrogdpyo6n", "url": "https://example.com/hook",
        "data": {
            "object": "activity", "id": event_id, "type": kind.split(".", 1)[1],
            "created_at": "2024-01-05T10:12:00.000000Z",
            "email": {"object": "email", "id": "62fb66bef54a112e920b5493",
                      "message": {"object": "message", "id": "62fb66bef54a112e920b5492"},
                      "recipient": {"object": "recipient", "email": "bob@example.org"}},
            "morph": {"object": "recipient_bounce", "reason": "Host or domain name not found",
                      "readable_reason": "The domain does not exist"},
        },
    }  # fmt: skip


def mailersend_signed(
    item: dict[str, Any], secret: str = MS_SECRET
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(item).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Signature": digest, "Content-Type": "application/json"}


async def test_mailersend_event_found_by_provider_message_id(served: tuple[Mailer, str]) -> None:
    mailer, url = served
    response = await post(f"{url}/ms", *mailersend_signed(
        mailersend_event("activity.hard_bounced", "ev-1")))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0}
    entry = await mailer.suppression.get("bob@example.org")
    assert entry is not None and entry.provider == "ms"


async def test_mailersend_parse_fields_and_forgery() -> None:
    provider = MailerSendProvider.from_config("ms", {
        "api_key": "ms-k", "webhook": {"signing_secret": MS_SECRET}})  # fmt: skip
    parser = provider.webhook()
    assert parser is not None
    from mailer.providers.http.webhook import WebhookRefused, WebhookRequest

    body, headers = mailersend_signed(mailersend_event("activity.soft_bounced", "ev-2"))
    request = WebhookRequest("ms", {k.lower(): v for k, v in headers.items()}, body)
    await parser.verify(request)
    [event] = await parser.parse(request)
    assert (event.type, event.bounce) == ("bounced", "soft")
    assert event.provider_message_id == "62fb66bef54a112e920b5492"
    assert event.reason == "The domain does not exist"
    assert event.event_id == "ev-2" and event.message_id is None
    forged = WebhookRequest("ms", {"signature": "00" * 32}, body)
    with pytest.raises(WebhookRefused):
        await parser.verify(forged)


# -- Mandrill: form post, X-Mandrill-Signature over URL + sorted fields ----------------------


def mandrill_events() -> list[dict[str, Any]]:
    msg = {"ts": 1365109999, "email": "cat@example.org", "sender": "shop@example.com",
           "subject": "x", "tags": [], "metadata": {"mailer_message_id": MID},
           "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa", "state": "bounced",
           "bounce_description": "bad_mailbox", "diag": "smtp;550 5.1.1 unknown"}  # fmt: skip
    return [
        {"event": "send", "ts": 1365109990, "_id": msg["_id"], "msg": {**msg, "state": "sent"}},
        {"event": "hard_bounce", "ts": 1365109999, "_id": msg["_id"], "msg": msg},
        {"type": "blacklist", "action": "add", "reject": {"email": "x@example.org"}},  # sync
    ]


async def test_mandrill_events_are_stored(served: tuple[Mailer, str]) -> None:
    mailer, url = served
    fields = [("mandrill_events", json.dumps(mandrill_events()))]
    headers = {"X-Mandrill-Signature": signature(MD_KEY, f"{url}/md", fields),
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    response = await post(f"{url}/md", urlencode(fields).encode(), headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2, "duplicates": 0}
    events = await mailer.delivery_events(MID)
    assert [(e.type, e.bounce) for e in events] == [("accepted", None), ("bounced", "hard")]
    assert events[1].reason == "smtp;550 5.1.1 unknown"
    forged = {**headers, "X-Mandrill-Signature": signature("other", f"{url}/md", fields)}
    refused = await post(f"{url}/md", urlencode(fields).encode(), forged)
    assert refused.status_code == 401 and MD_KEY not in refused.text


def test_mandrill_webhook_url_is_checked() -> None:
    hook = {"key": MD_KEY, "url": "example.com"}
    with pytest.raises(ConfigError, match=r"webhook\.url") as info:
        MandrillProvider.from_config("md", {"api_key": "md-k", "webhook": hook})
    assert MD_KEY not in str(info.value)


# -- Mailtrap: Mailtrap-Signature = hex HMAC-SHA256 of the body (the SDK's algorithm) ------


def mailtrap_events() -> dict[str, Any]:
    common = {
        "message_id": "1df37d17-0286-4d8b-8edf-bc4ec5be86e6",
        "email": "dan@example.org",
        "sending_stream": "transactional",
        "category": "orders",
        "custom_variables": {"mailer_message_id": MID},
        "timestamp": 1716306250,
    }
    return {
        "events": [
            {**common, "event": "delivery", "event_id": "bede7236-2284-43d6-a953-1fdcafd0fdbc"},
            {
                **common,
                "event": "soft bounce",
                "event_id": "ec0c4a0d-1e4e-4e5e-9a2b-1b4b4b0b0b0b",
                "response": "421 4.7.0 try again later",
                "response_code": 421,
                "bounce_category": "unavailable",
            },
        ]
    }


async def test_mailtrap_events_are_stored_and_verified_as_the_sdk_does(
    served: tuple[Mailer, str],
) -> None:
    from mailtrap.webhooks import verify_signature

    mailer, url = served
    body = json.dumps(mailtrap_events()).encode()
    digest = hmac.new(MT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(body, digest, MT_SECRET)  # the SDK agrees with our signer
    headers = {"Mailtrap-Signature": digest, "Content-Type": "application/json"}
    response = await post(f"{url}/mt", body, headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2, "duplicates": 0}
    events = await mailer.delivery_events(MID)
    assert [(e.type, e.bounce) for e in events] == [("delivered", None), ("bounced", "soft")]
    assert events[1].reason == "421 4.7.0 try again later"
    assert events[1].provider_message_id == "1df37d17-0286-4d8b-8edf-bc4ec5be86e6"
    forged = {**headers, "Mailtrap-Signature": "0" * 64}
    refused = await post(f"{url}/mt", body, forged)
    assert refused.status_code == 401 and MT_SECRET not in refused.text
