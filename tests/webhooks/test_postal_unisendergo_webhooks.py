"""Postal's and Unisender Go's webhooks: verified as each ESP signs (Postal: RSA over
SHA-256 and SHA-1; Unisender Go: the MD5 auth field), then parsed into DeliveryEvents."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer import ConfigError
from mailer.providers._postal import PostalProvider
from mailer.providers._unisender_go import UnisenderGoProvider
from mailer.providers.http.correlation import CORRELATION_KEY
from mailer.providers.http.webhook import WebhookRefused, WebhookRequest

pytestmark = pytest.mark.anyio

NOW = 1_764_900_000.0

# -- Postal -------------------------------------------------------------------------------

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
POSTAL_PUBLIC = base64.b64encode(
    _KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()

#: Postal's documented MessageSent post (docs.postalserver.io/developer/webhooks)
POSTAL_SENT = {
    "event": "MessageSent",
    "timestamp": 1764899990.12994,
    "uuid": "9be2ec2e-2b8c-4d5e-9e53-0c9a9b0e5f21",
    "payload": {
        "message": {
            "id": 12345,
            "token": "abcdef123",
            "direction": "outgoing",
            "message_id": "5817a64332f44_4ec93ff59e79d154565eb@app34.mail",
            "to": "Ann@Example.org",
            "from": "shop@example.com",
            "subject": "Hi",
            "timestamp": 1764899989.0,
            "spam_status": "NotChecked",
            "tag": None,
        },
        "status": "Sent",
        "details": "Message for ann@example.org accepted",
        "output": "250 2.0.0 OK",
        "sent_with_ssl": True,
        "timestamp": 1764899990.1,
        "time": 0.22,
    },
}


def _postal() -> PostalProvider:
    return PostalProvider.from_config(
        "postal",
        {
            "server_key": "k",
            "base_url": "https://postal.example.com",
            "webhook": {"public_key": POSTAL_PUBLIC},
        },
    )


def _signed(body: bytes, *, sha256: bool = True) -> dict[str, str]:
    digest = hashes.SHA256() if sha256 else hashes.SHA1()  # noqa: S303 - Postal's own
    signature = base64.b64encode(_KEY.sign(body, padding.PKCS1v15(), digest)).decode()
    return {"x-postal-signature-256" if sha256 else "x-postal-signature": signature}


async def test_postal_event_verified_and_parsed() -> None:
    parser = _postal().webhook()
    assert parser is not None
    body = json.dumps(POSTAL_SENT).encode()
    for sha256 in (True, False):
        request = WebhookRequest("postal", _signed(body, sha256=sha256), body, now=NOW)
        await parser.verify(request)
    events = await parser.parse(request)
    assert len(events) == 1
    event = events[0]
    assert (event.type, event.recipient) == ("delivered", "Ann@example.org")
    assert event.provider_message_id == "5817a64332f44_4ec93ff59e79d154565eb@app34.mail"
    assert event.event_id == POSTAL_SENT["uuid"]
    assert event.reason == "250 2.0.0 OK"


async def test_postal_bounce_is_hard_and_the_original_message() -> None:
    post = {
        "event": "MessageBounced",
        "timestamp": 1764899990.0,
        "uuid": "u-2",
        "payload": {
            "original_message": {"id": 1, "message_id": "orig@x", "to": "gone@example.org"},
            "bounce": {"id": 2, "message_id": "b@x", "subject": "Undelivered"},
        },
    }
    parser = _postal().webhook()
    assert parser is not None
    (event,) = await parser.parse(WebhookRequest("postal", {}, json.dumps(post).encode()))
    assert (event.type, event.bounce, event.provider_message_id) == ("bounced", "hard", "orig@x")
    assert event.reason == "Undelivered"


async def test_postal_refuses_unsigned_and_tampered() -> None:
    parser = _postal().webhook()
    assert parser is not None
    body = json.dumps(POSTAL_SENT).encode()
    with pytest.raises(WebhookRefused, match="no X-Postal-Signature"):
        await parser.verify(WebhookRequest("postal", {}, body))
    headers = _signed(body)
    with pytest.raises(WebhookRefused, match="does not verify"):
        await parser.verify(WebhookRequest("postal", headers, body.replace(b"Sent", b"Held")))


def test_postal_public_key_is_checked() -> None:
    with pytest.raises(ConfigError, match="public_key"):
        PostalProvider.from_config(
            "postal",
            {
                "server_key": "k",
                "base_url": "https://postal.example.com",
                "webhook": {"public_key": "not a key"},
            },
        )


# -- Unisender Go -------------------------------------------------------------------------

UG_KEY = "ug-webhook-api-key"


def _ug_post(**event_data: Any) -> bytes:
    """A post as Unisender Go's docs show one, its auth field computed as theirs is."""
    data = {
        "job_id": "1a3Q2V-0000OZ-S0",
        "email": "ann@example.org",
        "status": "delivered",
        "event_time": "2025-12-05 01:00:00",
        "url": None,
        "metadata": {CORRELATION_KEY: "<m1@example.com>", "order_id": "42"},
        "delivery_info": {"delivery_status": "ok", "destination_response": "250 2.0.0 OK"},
        **event_data,
    }
    post = {
        "auth": "PLACEHOLDER",
        "events_by_user": [
            {
                "user_id": 456,
                "project_id": "6432890",
                "project_name": "shop",
                "events": [
                    {"event_name": "transactional_email_status", "event_data": data},
                    {
                        "event_name": "transactional_spam_block",
                        "event_data": {
                            "block_time": "2025-12-05 01:00:00",
                            "block_type": "one_smtp",
                            "domain": "example.org",
                            "SMTP_blocks_count": 8,
                            "domain_status": "blocked",
                        },
                    },
                ],
            }
        ],
    }
    text = json.dumps(post)
    auth = hashlib.md5(text.replace("PLACEHOLDER", UG_KEY).encode()).hexdigest()  # noqa: S324
    return text.replace("PLACEHOLDER", auth).encode()


def _ug_parser() -> Any:
    provider = UnisenderGoProvider.from_config(
        "ug", {"api_key": "send-key", "webhook": {"api_key": UG_KEY}}
    )
    parser = provider.webhook()
    assert parser is not None
    return parser


async def test_unisender_go_event_verified_and_parsed() -> None:
    parser = _ug_parser()
    body = _ug_post()
    request = WebhookRequest("ug", {}, body, now=NOW)
    await parser.verify(request)
    (event,) = await parser.parse(request)  # the spam block is about a domain: not an event
    assert (event.type, event.recipient) == ("delivered", "ann@example.org")
    assert event.message_id == "<m1@example.com>"
    assert event.provider_message_id == "1a3Q2V-0000OZ-S0"
    assert event.reason == "250 2.0.0 OK"
    again = await parser.parse(WebhookRequest("ug", {}, _ug_post(), now=NOW))
    assert again[0].event_id == event.event_id  # the ESP's retry is a duplicate


@pytest.mark.parametrize(
    ("status", "kind", "bounce"),
    [
        ("hard_bounced", "bounced", "hard"),
        ("soft_bounced", "bounced", "soft"),
        ("spam", "complained", None),
        ("unsubscribed", "unsubscribed", None),
        ("opened", "opened", None),
        ("subscribed", "unknown", None),
    ],
)
async def test_unisender_go_statuses(status: str, kind: str, bounce: str | None) -> None:
    (event,) = await _ug_parser().parse(WebhookRequest("ug", {}, _ug_post(status=status)))
    assert (event.type, event.bounce) == (kind, bounce)


async def test_unisender_go_refuses_a_wrong_digest() -> None:
    parser = _ug_parser()
    tampered = _ug_post().replace(b"delivered", b"hard_bounced", 1)
    with pytest.raises(WebhookRefused, match="does not verify"):
        await parser.verify(WebhookRequest("ug", {}, tampered))
    with pytest.raises(WebhookRefused, match="not JSON"):
        await parser.verify(WebhookRequest("ug", {}, b"auth=x"))
    other = UnisenderGoProvider.from_config(
        "ug", {"api_key": "k", "webhook": {"api_key": "another"}}
    ).webhook()
    assert other is not None
    with pytest.raises(WebhookRefused):
        await other.verify(WebhookRequest("ug", {}, _ug_post()))
