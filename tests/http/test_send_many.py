"""Mailer.send_many: per-message routing, batch endpoints underneath, only failed items
fail over, one result or error per message in order."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from mailer import (
    Mailer,
    Message,
    MessageError,
    RecipientsRefused,
    SendResult,
    commit_hooks,
)
from mailer.providers._postmark import PostmarkProvider
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio

PM_BATCH = "https://api.postmarkapp.com/email/batch"
PM_ONE = "https://api.postmarkapp.com/email"


def msg(i: int) -> Message:
    return Message(sender="s@example.com", to=[f"r{i}@example.org"], subject=f"m{i}", text="t")


def postmark() -> PostmarkProvider:
    return PostmarkProvider.from_config("postmark", {"server_token": "pm-token-1234"})


def batch_answer(request: httpx.Request) -> httpx.Response:
    """Accept every item except those to r3@...: inactive recipient (ErrorCode 406)."""
    items = json.loads(request.content)
    out: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        if item["To"] == "r3@example.org":
            out.append({"ErrorCode": 406, "Message": "Found inactive addresses: r3@example.org."})
        else:
            out.append({"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}", "To": item["To"]})
    return httpx.Response(200, json=out)


async def test_send_many_uses_the_batch_endpoint_with_per_item_results() -> None:
    messages = [msg(i) for i in range(250)]
    mailer = Mailer([postmark()])
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        batch = router.post(PM_BATCH).mock(side_effect=batch_answer)
        single = router.post(PM_ONE).mock(return_value=httpx.Response(500))
        async with mailer:
            results = await mailer.send_many(messages)
    assert single.call_count == 0
    assert 3 <= batch.call_count <= 25  # 250 sends, 100 at a time, merged into batches
    sent_ids = [h["Value"] for call in batch.calls for item in json.loads(call.request.content)
                for h in item["Headers"] if h["Name"] == "Message-ID"]  # fmt: skip
    assert sorted(sent_ids) == sorted(m.message_id for m in messages)  # each exactly once
    assert len(results) == 250
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, RecipientsRefused)  # a recipient problem: not failed over
        else:
            assert isinstance(result, SendResult) and result.provider == "postmark"
            assert result.message_id == messages[i].message_id
            assert [a.committed for a in result.attempts] == [True]


async def test_only_the_failed_items_fail_over() -> None:
    # The batch endpoint refuses two items for the account (sender signature): those two
    # go to the backup, the rest stay delivered by Postmark; nothing is sent twice.
    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        return httpx.Response(200, json=[
            {"ErrorCode": 400, "Message": "The 'From' address is not a Sender Signature."}
            if item["Subject"] in ("m1", "m7") else
            {"ErrorCode": 0, "Message": "OK", "MessageID": "x", "To": item["To"]}
            for item in items
        ])  # fmt: skip

    backup = ScriptedProvider("backup")
    mailer = Mailer([postmark(), backup])
    messages = [msg(i) for i in range(10)]
    with respx.mock(assert_all_mocked=True) as router:
        router.post(PM_BATCH).mock(side_effect=answer)
        async with mailer:
            results = await mailer.send_many(messages)
    providers = [r.provider for r in results if isinstance(r, SendResult)]
    assert providers.count("backup") == 2 and providers.count("postmark") == 8
    assert {m.subject for m in backup.messages} == {"m1", "m7"}


async def test_bad_messages_fail_alone_and_hooks_see_each_commit() -> None:
    crossed: list[int] = []

    async def hook() -> None:
        crossed.append(1)

    messages: list[Any] = [msg(0), Message(sender="s@example.com", bcc=["b@example.org"],
                                           subject="bcc only", text="t"), msg(2)]  # fmt: skip
    mailer = Mailer([postmark()])
    with respx.mock(assert_all_mocked=True) as router:
        router.post(PM_BATCH).mock(side_effect=batch_answer)
        async with mailer:
            with commit_hooks(hook):
                results = await mailer.send_many(messages)
    assert isinstance(results[0], SendResult) and isinstance(results[2], SendResult)
    assert isinstance(results[1], MessageError)  # no provider can send it: alone, in order
    assert len(crossed) == 2  # one commit point per message that went out


async def test_single_sends_are_not_held_back_for_a_batch() -> None:
    mailer = Mailer([postmark()])
    with respx.mock(assert_all_mocked=True) as router:
        ok = {"ErrorCode": 0, "Message": "OK", "MessageID": "pm-1", "To": "r0@example.org"}
        one = router.post(PM_ONE).mock(return_value=httpx.Response(200, json=ok))
        async with mailer:
            result = await mailer.send(msg(0))
    assert one.call_count == 1 and result.provider == "postmark"


def test_sync_mailer_send_many_uses_the_batch_endpoint_too() -> None:
    from mailer import SyncMailer

    messages = [msg(i) for i in range(20)]
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        batch = router.post(PM_BATCH).mock(side_effect=batch_answer)
        single = router.post(PM_ONE).mock(return_value=httpx.Response(500))
        with SyncMailer(Mailer([postmark()])) as mailer:
            results = mailer.send_many(messages)
    assert single.call_count == 0 and 1 <= batch.call_count <= 5
    assert [type(r).__name__ for r in results].count("SendResult") == 19  # r3 is refused


async def test_a_message_too_big_for_one_api_fails_over_to_the_next() -> None:
    """Postmark takes 10 MB a message: a 12 MB one goes to the next provider, and the
    batch requests send_many makes for the rest stay under Postmark's 50 MB."""
    raw = bytes(9_000_000)  # 12 MB in base64
    huge = Message(sender="s@example.com", to=["h@example.org"], text="t",
                   attachments=[{"content": raw, "filename": "h.bin"}])  # fmt: skip
    mid = bytes(6_000_000)  # 8 MB in base64: at most 6 in a batch request
    messages = [
        Message(
            sender="s@example.com",
            to=[f"b{i}@example.org"],
            subject=f"m{i}",
            text="t",
            attachments=[{"content": mid, "filename": "m.bin"}],
        )
        for i in range(8)
    ]
    backup = ScriptedProvider("backup")
    mailer = Mailer([postmark(), backup])
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        batch = router.post(PM_BATCH).mock(side_effect=batch_answer)
        single = router.post(PM_ONE).mock(return_value=httpx.Response(500))
        async with mailer:
            results = await mailer.send_many([huge, *messages])
    assert all(isinstance(r, SendResult) for r in results), results
    first = results[0]
    assert isinstance(first, SendResult) and first.provider == "backup"
    assert all(isinstance(r, SendResult) and r.provider == "postmark" for r in results[1:])
    assert single.call_count == 0
    assert all(len(call.request.content) <= 50_000_000 for call in batch.calls)
    assert sum(len(json.loads(call.request.content)) for call in batch.calls) == 8
    assert batch.call_count >= 2
