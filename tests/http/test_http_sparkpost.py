"""SparkPost /api/v1/transmissions: region, Cc copies, tags per recipient, DSN."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mailer import Address, Message, RateLimited
from mailer._config import parse_dsn
from mailer.providers import SparkPostProvider

pytestmark = pytest.mark.anyio

KEY = "sp-key-0123456789"
OK = httpx.Response(200, json={"results": {"id": "sp-9", "total_accepted_recipients": 3,
                                           "total_rejected_recipients": 0}})  # fmt: skip


def make(**config: Any) -> SparkPostProvider:
    return SparkPostProvider.from_config("sparkpost", {"api_key": KEY, **config})


async def test_eu_region_sends_to_the_eu_host(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    url = "https://api.eu.sparkpost.com/api/v1/transmissions"
    sent = await stubbed(make(region="eu"), message, "POST", url, OK)
    assert sent.calls == 1
    assert sent.request.headers["Authorization"] == KEY  # the bare key, no scheme
    assert sent.result.provider_message_id == "sp-9"


async def test_cc_and_bcc_are_copies_showing_the_to_header(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=[Address(name='Ann "A"', email="ann@example.org")],
                      cc=["cat@example.org"], bcc=["dan@example.org"], subject="x", text="t",
                      tags=["t1", "t2"])  # fmt: skip
    url = "https://api.sparkpost.com/api/v1/transmissions"
    sent = await stubbed(make(), message, "POST", url, OK)
    body = sent.json()
    shown = '"Ann \\"A\\"" <ann@example.org>'
    assert body["recipients"] == [
        {"address": {"email": "ann@example.org", "name": 'Ann "A"'}, "tags": ["t1", "t2"]},
        {"address": {"email": "cat@example.org", "header_to": shown}, "tags": ["t1", "t2"]},
        {"address": {"email": "dan@example.org", "header_to": shown}, "tags": ["t1", "t2"]},
    ]
    assert body["content"]["headers"]["CC"] == "cat@example.org"
    assert "dan@example.org" not in str(body["content"]["headers"])  # Bcc stays hidden
    assert sorted(sent.result.accepted) == ["ann@example.org", "cat@example.org",
                                            "dan@example.org"]  # fmt: skip


async def test_provider_options_reach_the_transmission(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      provider_options={"sparkpost": {"options": {"open_tracking": False},
                                                      "campaign_id": "spring"}})  # fmt: skip
    url = "https://api.sparkpost.com/api/v1/transmissions"
    sent = await stubbed(make(), message, "POST", url, OK)
    assert sent.json()["options"] == {"open_tracking": False}
    assert sent.json()["campaign_id"] == "spring"


async def test_sending_limit_rests_at_least_retry_after(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(420, headers={"Retry-After": "90000"}, json={"errors": [
        {"message": "Exceed Sending Limit (daily)", "code": "2103"}]})  # fmt: skip
    url = "https://api.sparkpost.com/api/v1/transmissions"
    sent = await stubbed(make(), message, "POST", url, answer)
    assert isinstance(sent.error, RateLimited)
    assert sent.error.retry_after == 90000
    assert "code 2103" in str(sent.error)


def test_dsn_takes_the_key_and_region() -> None:
    entry = parse_dsn(f"sparkpost://{KEY}@default?region=eu")
    provider = SparkPostProvider.from_config("sp", entry["config"])
    assert entry["type"] == "sparkpost"
    assert provider.base_url == "https://api.eu.sparkpost.com"
