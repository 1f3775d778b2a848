"""Mandrill messages/send: the key in the body, per-recipient answers, users/ping."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from mailer import AuthError, Message, RecipientsRefused
from mailer.providers import MandrillProvider

pytestmark = pytest.mark.anyio

KEY = "md-key-0123456789"
URL = "https://mandrillapp.com/api/1.3/messages/send.json"
TWO = Message(sender="Shop <s@example.com>", to=["a@example.org"], bcc=["b@example.org"],
              subject="x", text="t")  # fmt: skip


def make() -> MandrillProvider:
    return MandrillProvider.from_config("mandrill", {"api_key": KEY})


def answer(*items: tuple[str, str, str | None]) -> httpx.Response:
    return httpx.Response(200, json=[{"email": e, "status": s, "reject_reason": r,
                                      "_id": f"id-{e[0]}"} for e, s, r in items])  # fmt: skip


async def test_key_in_body_and_types_per_recipient(stubbed: Any) -> None:
    sent = await stubbed(
        make(),
        TWO,
        "POST",
        URL,
        answer(("a@example.org", "sent", None), ("b@example.org", "queued", None)),
    )
    body = sent.json()
    assert body["key"] == KEY
    assert "Authorization" not in sent.request.headers
    assert body["message"]["to"] == [{"email": "a@example.org", "type": "to"},
                                     {"email": "b@example.org", "type": "bcc"}]  # fmt: skip
    assert body["message"]["from_name"] == "Shop"
    assert sent.result.provider_message_id == "id-a"
    assert sorted(sent.result.accepted) == ["a@example.org", "b@example.org"]


async def test_one_rejected_is_partial_success(stubbed: Any) -> None:
    sent = await stubbed(make(), TWO, "POST", URL, answer(("a@example.org", "sent", None),
                                                          ("b@example.org", "rejected",
                                                           "hard-bounce")))  # fmt: skip
    assert sent.result.accepted == ["a@example.org"]
    assert "hard-bounce" in sent.result.rejected["b@example.org"]


async def test_all_rejected_for_bounces_is_recipients_refused(stubbed: Any) -> None:
    sent = await stubbed(
        make(),
        TWO,
        "POST",
        URL,
        answer(("a@example.org", "rejected", "spam"), ("b@example.org", "invalid", None)),
    )
    assert isinstance(sent.error, RecipientsRefused)
    assert sorted(sent.error.refused) == ["a@example.org", "b@example.org"]
    assert sent.error.failover is False


async def test_all_rejected_for_the_sender_fails_over(stubbed: Any) -> None:
    sent = await stubbed(make(), TWO, "POST", URL,
                         answer(("a@example.org", "rejected", "unsigned"),
                                ("b@example.org", "rejected", "unsigned")))  # fmt: skip
    assert isinstance(sent.error, AuthError)
    assert sent.error.failover is True
    assert KEY not in str(sent.error) and KEY not in (sent.error.response or "")


async def test_verify_pings_with_the_key_in_the_body() -> None:
    provider = make()
    with respx.mock() as router:
        route = router.post("https://mandrillapp.com/api/1.3/users/ping.json").mock(
            return_value=httpx.Response(200, json="PONG!")
        )
        try:
            await provider.verify()
        finally:
            await provider.aclose()
    assert json.loads(route.calls.last.request.content) == {"key": KEY}
