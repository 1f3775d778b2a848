"""Mailtrap: live, bulk and sandbox hosts, the config rules, and /api/batch."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from mailer import AuthError, ConfigError, Message, PermanentError, SendResult
from mailer.providers import MailtrapProvider

pytestmark = pytest.mark.anyio

TOKEN = "mt-token-0123456789"


def make(**config: Any) -> MailtrapProvider:
    return MailtrapProvider.from_config("mailtrap", {"api_token": TOKEN, **config})


def msg(i: int) -> Message:
    return Message(sender="s@example.com", to=[f"r{i}@example.org"], subject=f"m{i}", text="t")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"sandbox": True}, "needs inbox_id"),
        ({"inbox_id": 5}, "sandbox only"),
        ({"sandbox": True, "inbox_id": 5, "bulk": True}, "exclude each other"),
    ],
)
def test_mode_rules_are_config_errors(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        make(**config)
    assert TOKEN not in str(info.value)


async def test_sandbox_sends_into_the_inbox(stubbed: Any) -> None:
    url = "https://sandbox.api.mailtrap.io/api/send/42"
    answer = httpx.Response(200, json={"success": True, "message_ids": ["sb-1"]})
    sent = await stubbed(make(sandbox=True, inbox_id=42), msg(1), "POST", url, answer)
    assert sent.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.result.provider_message_id == "sb-1"


async def test_bulk_stream_host(stubbed: Any) -> None:
    url = "https://bulk.api.mailtrap.io/api/send"
    answer = httpx.Response(200, json={"success": True, "message_ids": ["b-1"]})
    sent = await stubbed(make(bulk=True), msg(1), "POST", url, answer)
    assert sent.calls == 1


async def test_batch_gives_each_message_its_outcome() -> None:
    provider = make()
    answer = {"success": True, "responses": [
        {"success": True, "message_ids": ["id-0"]},
        {"success": False, "errors": ["'subject' is too long"]},
        {"success": False, "errors": ["Sending domain example.com is not verified"]},
    ]}  # fmt: skip
    with respx.mock(assert_all_called=True) as router:
        route = router.post("https://send.api.mailtrap.io/api/batch").mock(
            return_value=httpx.Response(200, json=answer)
        )
        try:
            out = await provider.send_batch([msg(0), msg(1), msg(2)])
        finally:
            await provider.aclose()
    assert route.call_count == 1
    body = json.loads(route.calls.last.request.content)
    assert [r["subject"] for r in body["requests"]] == ["m0", "m1", "m2"]
    assert isinstance(out[0], SendResult) and out[0].provider_message_id == "id-0"
    assert type(out[1]) is PermanentError and "too long" in str(out[1])
    assert isinstance(out[2], AuthError)


async def test_batch_answer_without_items_is_uncertain() -> None:
    provider = make()
    with respx.mock() as router:
        router.post("https://send.api.mailtrap.io/api/batch").mock(
            return_value=httpx.Response(200, json={"success": True})
        )
        try:
            out = await provider.send_batch([msg(0), msg(1)])
        finally:
            await provider.aclose()
    assert all(type(o).__name__ == "DeliveryUncertain" for o in out)


async def test_verify_reads_accounts_on_the_general_host() -> None:
    provider = make()
    with respx.mock() as router:
        route = router.get("https://mailtrap.io/api/accounts").mock(
            return_value=httpx.Response(200, json=[{"id": 1, "name": "acme"}])
        )
        try:
            await provider.verify()
        finally:
            await provider.aclose()
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
