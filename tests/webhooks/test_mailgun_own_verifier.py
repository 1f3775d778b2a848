"""Mailgun's webhook signature, cross-checked with Mailgun's own code.

Mailgun's official Python SDK (``mailgun`` on PyPI, github.com/mailgun/mailgun-python)
ships ``mailgun.security.SecurityGuard.verify_webhook(signing_key, token, timestamp,
signature, max_age_seconds=900)``: HMAC-SHA256 of the raw ``timestamp + token`` keyed
with the webhook signing key, hex, compared in constant time. The signer of these tests
(``sign.mailgun_signature``) and our parser (``mailer.providers._mailgun_webhook``) were
written from Mailgun's documentation; here Mailgun's verifier and ours judge the same
posts, and must agree on each.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from mailgun.security import SecurityGuard

from mailer.providers._mailgun import MailgunProvider
from mailer.providers.http.webhook import WebhookRefused, WebhookRequest

from .conftest import sample
from .sign import mailgun_signature

pytestmark = pytest.mark.anyio

KEY = "key-mailgun-signing-0123456789"


def signed_post(now: float, key: str = KEY) -> dict[str, Any]:
    return {"signature": mailgun_signature(key, int(now)), "event-data": sample("mailgun")[0]}


def mailguns_verdict(post: dict[str, Any], max_age: int = 900) -> bool:
    sig = post["signature"]
    return SecurityGuard.verify_webhook(
        KEY, sig["token"], sig["timestamp"], sig["signature"], max_age_seconds=max_age
    )


async def our_verdict(post: dict[str, Any], now: float) -> bool:
    parser = MailgunProvider.from_config(
        "mailgun", {"api_key": "key-api", "domain": "mg.example.com",
                    "webhook": {"signing_key": KEY}},
    ).webhook()  # fmt: skip
    assert parser is not None
    request = WebhookRequest("mailgun", {"content-type": "application/json"},
                             json.dumps(post).encode(), now=now)  # fmt: skip
    try:
        await parser.verify(request)
    except WebhookRefused:
        return False
    return True


def other_last(text: str) -> str:
    """The text with its last character changed. Always changed: a fixed replacement
    ("0") left one random token in sixteen as it was, and failed CI that way."""
    return text[:-1] + ("1" if text[-1] == "0" else "0")


def tampered(post: dict[str, Any], **changes: str) -> dict[str, Any]:
    return {**post, "signature": {**post["signature"], **changes}}


async def test_mailguns_own_library_accepts_our_signatures() -> None:
    """An independent check of the signing in these tests: Mailgun's verifier."""
    now = time.time()
    post = signed_post(now)
    assert mailguns_verdict(post)
    assert await our_verdict(post, now)


async def test_mailguns_library_and_ours_refuse_the_same_forgeries() -> None:
    """Each part of the signed triple changed, or another key: both refuse."""
    now = time.time()
    post = signed_post(now)
    sig = post["signature"]
    forgeries = {
        "token": tampered(post, token=other_last(sig["token"])),
        "timestamp": tampered(post, timestamp=str(int(sig["timestamp"]) - 1)),
        "signature": tampered(post, signature="0" * 64),
        "another key": signed_post(now, key="key-someone-else-0000"),
    }
    for what, forged in forgeries.items():
        assert not mailguns_verdict(forged), what
        assert not await our_verdict(forged, now), what


async def test_an_old_signature_is_refused_by_both_our_window_being_the_shorter() -> None:
    """Mailgun's verifier allows 15 minutes by default; ours 5 (MAX_SKEW): a post signed
    10 minutes ago is good to Mailgun's code at its default and refused by ours, and one
    signed 20 minutes ago is refused by both."""
    now = time.time()
    ten, twenty = signed_post(now - 600), signed_post(now - 1200)
    assert mailguns_verdict(ten) and not await our_verdict(ten, now)
    assert not mailguns_verdict(twenty) and not await our_verdict(twenty, now)
    assert not mailguns_verdict(ten, max_age=300)  # at our window, Mailgun's agrees
