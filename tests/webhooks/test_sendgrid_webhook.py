"""SendGrid's Signed Event Webhook through uvicorn on 127.0.0.1: the documented sample
events, signed as SendGrid signs them, stored with the right fields; tampered, unsigned
and replayed posts refused with nothing stored; a repeated post applied once."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sendgrid.helpers.eventwebhook import EventWebhook

from mailer import ConfigError, Mailer
from mailer.providers._sendgrid import SendGridProvider

from .conftest import sample, served_mailer
from .sign import SendGridSigner

pytestmark = pytest.mark.anyio

SIGNER = SendGridSigner()


def provider() -> SendGridProvider:
    return SendGridProvider.from_config(
        "grid", {"api_key": "SG.secret", "webhook": {"public_key": SIGNER.public_key}}
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Mailer, str]]:
    async with served_mailer(tmp_path, provider()) as (mailer, url):
        yield mailer, url


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/grid", content=body, headers=headers)


def signed(events: Any, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    return body, SIGNER.headers(body, int(at if at is not None else time.time()))


async def nothing_stored(mailer: Mailer) -> None:
    assert await mailer.delivery_events("<m1@app.example.com>") == []
    assert await mailer.suppression.list() == []


async def test_documented_samples_are_stored_with_their_fields(
    served: tuple[Mailer, str],
) -> None:
    mailer, url = served
    response = await post(url, *signed(sample("sendgrid")))
    assert response.status_code == 200
    assert response.json() == {"stored": 12, "duplicates": 0}
    events = await mailer.delivery_events("<m1@app.example.com>")
    # the eight that carry the correlation key (custom_args), whatever the send's reply
    assert [e.type for e in events] == ["accepted", "deferred", "delivered", "opened",
                                        "clicked", "bounced", "bounced", "rejected"]  # fmt: skip
    by_id = {e.event_id: e for e in events}
    hard, soft = by_id["6g4ZI7SA-xmRDv57GoPIPw=="], by_id["b8R7WQ4qRtm3Ggfdhsvl8A=="]
    assert (hard.bounce, hard.reason) == ("hard", "500 unknown recipient")
    assert (soft.bounce, soft.reason) == ("soft", "452 mailbox full")
    assert hard.provider == "grid" and hard.recipient == "example@test.com"
    assert hard.provider_message_id == "14c5d75ce93"
    assert hard.timestamp.timestamp() == 1513299569
    assert hard.raw["status"] == "5.0.0"
    entry = await mailer.suppression.get("example@test.com")
    assert entry is not None and entry.provider == "grid"


async def test_a_repeated_post_is_applied_once(served: tuple[Mailer, str]) -> None:
    mailer, url = served
    calls: list[str] = []
    mailer.on_delivery(lambda event: calls.append(event.type))
    first = await post(url, *signed(sample("sendgrid")))
    again = await post(url, *signed(sample("sendgrid")))  # SendGrid's retry, signed anew
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == {"stored": 0, "duplicates": 12}
    assert len(calls) == 12
    assert len(await mailer.delivery_events("<m1@app.example.com>")) == 8


@pytest.mark.parametrize("attack", ["tampered", "unsigned", "replayed", "future", "other key"])
async def test_forged_posts_are_refused_and_change_nothing(
    served: tuple[Mailer, str], attack: str
) -> None:
    mailer, url = served
    body, headers = signed(sample("sendgrid"))
    if attack == "tampered":
        body = body.replace(b"example@test.com", b"victim@test.com")
    elif attack == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif attack == "replayed":  # a genuine post captured 6 minutes ago
        body, headers = signed(sample("sendgrid"), at=time.time() - 360)
    elif attack == "future":
        body, headers = signed(sample("sendgrid"), at=time.time() + 360)
    else:
        body, headers = body, SendGridSigner().headers(body, int(time.time()))
    response = await post(url, body, headers)
    assert response.status_code == 401
    assert "SG.secret" not in response.text and "example@test.com" not in response.text
    await nothing_stored(mailer)


def test_sendgrids_own_library_accepts_our_signatures() -> None:
    """An independent check of the signing in these tests: SendGrid's EventWebhook."""
    body, headers = signed(sample("sendgrid"))
    hook = EventWebhook()
    key = hook.convert_public_key_to_ecdsa(SIGNER.public_key)
    assert hook.verify_signature(
        body.decode(),
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
        key,
    )


def test_a_key_that_is_no_p256_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="public_key"):
        SendGridProvider.from_config("grid", {"api_key": "k", "webhook": {"public_key": "abc"}})
