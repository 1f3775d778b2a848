"""MailerSend /v1/email: suppressed recipients in a 202, limits refused before I/O."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mailer import Message, MessageError, RecipientsRefused
from mailer.providers import MailerSendProvider
from mailer.providers._mailersend import until_midnight_utc

pytestmark = pytest.mark.anyio

URL = "https://api.mailersend.com/v1/email"
TWO = Message(sender="s@example.com", to=["a@example.org", "b@example.org"], subject="x",
              text="t")  # fmt: skip


def make() -> MailerSendProvider:
    return MailerSendProvider.from_config("mailersend", {"api_key": "mlsn.key-0123"})


def suppressed(kind: str, *emails: str) -> httpx.Response:
    return httpx.Response(202, headers={"X-Message-Id": "ms-7"}, json={"warnings": [{
        "type": kind, "warning": "Some of the recipients have been suppressed.",
        "recipients": [{"email": e, "name": None, "reasons": ["hard_bounced"]}
                       for e in emails]}]})  # fmt: skip


async def test_some_suppressed_is_partial_success(stubbed: Any) -> None:
    sent = await stubbed(make(), TWO, "POST", URL, suppressed("SOME_SUPPRESSED", "b@example.org"))
    assert sent.result.accepted == ["a@example.org"]
    assert list(sent.result.rejected) == ["b@example.org"]
    assert "hard_bounced" in sent.result.rejected["b@example.org"]
    assert sent.result.provider_message_id == "ms-7"


async def test_all_suppressed_is_recipients_refused(stubbed: Any) -> None:
    answer = suppressed("ALL_SUPPRESSED", "a@example.org", "b@example.org")
    sent = await stubbed(make(), TWO, "POST", URL, answer)
    assert isinstance(sent.error, RecipientsRefused)
    assert sorted(sent.error.refused) == ["a@example.org", "b@example.org"]
    assert sent.error.failover is False


async def test_too_many_cc_refused_before_io(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      cc=[f"c{i}@example.org" for i in range(11)])  # fmt: skip
    sent = await stubbed(make(), message, "POST", URL, httpx.Response(202))
    assert isinstance(sent.error, MessageError) and sent.calls == 0
    assert "at most 10 cc recipients" in str(sent.error)


async def test_metadata_refused_and_message_id_not_sent(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      metadata={"k": "v"})  # fmt: skip
    refused = await stubbed(make(), message, "POST", URL, httpx.Response(202))
    assert isinstance(refused.error, MessageError) and refused.calls == 0
    assert "metadata" in str(refused.error)
    plain = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                    headers={"X-A": "1"})  # fmt: skip
    sent = await stubbed(make(), plain, "POST", URL, httpx.Response(202))
    assert sent.json()["headers"] == [{"name": "X-A", "value": "1"}]  # no Message-ID
    assert sent.result.message_id == plain.message_id


def test_quota_rests_until_midnight_utc() -> None:
    assert until_midnight_utc(now=86400.0 * 3 + 3600.0) == 23 * 3600.0
    assert until_midnight_utc(now=86400.0 * 3) == 86400.0
