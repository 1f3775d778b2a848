"""send_batch: batch endpoints (Postmark /email/batch, Resend /emails/batch), per-item
results, ambiguous batch failures, and the concurrent default for other adapters."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from mailer import (
    AuthError,
    DeliveryUncertain,
    Message,
    MessageError,
    PermanentError,
    RecipientsRefused,
    SendResult,
)
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers._sendgrid import SendGridProvider

pytestmark = pytest.mark.anyio

PM_BATCH = "https://api.postmarkapp.com/email/batch"
RE_BATCH = "https://api.resend.com/emails/batch"


def msg(i: int, **extra: Any) -> Message:
    fields: dict[str, Any] = {"sender": "s@example.com", "to": [f"r{i}@example.org"],
                              "subject": f"m{i}", "text": "t", **extra}  # fmt: skip
    return Message(**fields)


def postmark() -> PostmarkProvider:
    return PostmarkProvider.from_config("postmark", {"server_token": "pm-token-1234"})


def resend() -> ResendProvider:
    return ResendProvider.from_config("resend", {"api_key": "re_key_1234"})


def pm_ok(to: str, n: int) -> dict[str, Any]:
    return {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}", "To": to}


async def test_postmark_batch_gives_each_message_its_own_outcome() -> None:
    messages = [msg(0), msg(1), Message(sender="s@example.com", bcc=["b@example.org"],
                                        subject="no to", text="t"), msg(3)]  # fmt: skip
    inactive = (
        "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
        "addresses: r1@example.org. Inactive recipients are ones that..."
    )
    answer = [pm_ok("r0@example.org", 0), {"ErrorCode": 406, "Message": inactive},
              pm_ok("r3@example.org", 3)]  # fmt: skip
    provider = postmark()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(PM_BATCH).mock(return_value=httpx.Response(200, json=answer))
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    assert route.call_count == 1
    sent = json.loads(route.calls.last.request.content)
    assert [item["Subject"] for item in sent] == ["m0", "m1", "m3"]
    assert [h["Value"] for h in sent[0]["Headers"]] == [messages[0].message_id]
    assert isinstance(outcomes[0], SendResult) and outcomes[0].provider_message_id == "pm-0"
    assert outcomes[0].message_id == messages[0].message_id
    assert isinstance(outcomes[1], RecipientsRefused)
    assert list(outcomes[1].refused) == ["r1@example.org"]
    assert outcomes[1].provider == "postmark"
    assert isinstance(outcomes[2], MessageError)  # refused before I/O, the others still sent
    assert isinstance(outcomes[3], SendResult) and outcomes[3].provider_message_id == "pm-3"


async def postmark_batches(messages: list[Message]) -> tuple[list[Any], list[int]]:
    """send_batch through Postmark accepting every item: the outcomes and the sizes
    (messages per request) of the batch requests made, checked against the 50 MB limit."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert len(request.content) <= 50_000_000
        items = json.loads(request.content)
        return httpx.Response(200, json=[pm_ok(m["To"], i) for i, m in enumerate(items)])

    provider = postmark()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(PM_BATCH).mock(side_effect=answer)
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    return outcomes, sorted(len(json.loads(c.request.content)) for c in route.calls)


async def test_postmark_batches_500_at_a_time() -> None:
    messages = [msg(i) for i in range(501)]
    outcomes, sizes = await postmark_batches(messages)
    assert sizes == [1, 500]
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert [o.message_id for o in outcomes if isinstance(o, SendResult)] == [
        m.message_id for m in messages
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.ReadTimeout("timed out"), DeliveryUncertain),
        (httpx.Response(500, json={"ErrorCode": 0, "Message": "oops"}), DeliveryUncertain),
        (httpx.Response(401, json={"ErrorCode": 10, "Message": "bad token"}), AuthError),
        (httpx.Response(200, json=[]), DeliveryUncertain),  # a 2xx without item results
    ],
)
async def test_a_failed_postmark_batch_fails_each_item(answer: Any, expected: type) -> None:
    messages = [msg(0), msg(1)]
    provider = postmark()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(PM_BATCH)
        route.mock(side_effect=answer) if isinstance(answer, Exception) else route.mock(
            return_value=answer
        )
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    assert route.call_count == 1  # not idempotent: never re-sent
    assert all(type(o) is expected for o in outcomes)
    assert outcomes[0] is not outcomes[1]  # each item has its own error (own attempts)


async def test_resend_batch_is_permissive_idempotent_and_per_item() -> None:
    from mailer import Attachment

    with_file = msg(9, attachments=[Attachment(content=b"x", filename="a.txt")])
    messages = [msg(0), msg(1), with_file, msg(3)]
    answer = {"data": [{"id": "re-0"}, {"id": "re-3"}],
              "errors": [{"index": 1, "message": "Invalid `to` field."}]}  # fmt: skip
    provider = resend()
    with respx.mock(assert_all_mocked=True) as router:
        batch = router.post(RE_BATCH).mock(return_value=httpx.Response(200, json=answer))
        single = router.post("https://api.resend.com/emails").mock(
            return_value=httpx.Response(200, json={"id": "re-single"})
        )
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    request = batch.calls.last.request
    assert request.headers["x-batch-validation"] == "permissive"
    assert request.headers["Idempotency-Key"].startswith("mailer-batch-")
    assert [m["subject"] for m in json.loads(request.content)] == ["m0", "m1", "m3"]
    assert single.call_count == 1  # the batch endpoint takes no attachments
    assert isinstance(outcomes[0], SendResult) and outcomes[0].provider_message_id == "re-0"
    assert isinstance(outcomes[1], PermanentError) and "Invalid `to`" in str(outcomes[1])
    assert isinstance(outcomes[2], SendResult)
    assert outcomes[2].provider_message_id == "re-single"
    assert isinstance(outcomes[3], SendResult) and outcomes[3].provider_message_id == "re-3"


async def test_resend_batch_is_resent_with_the_same_key_after_an_ambiguous_failure() -> None:
    messages = [msg(0), msg(1)]
    answers = iter([httpx.ReadTimeout("timed out"),
                    httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]})])  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    provider = resend()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(RE_BATCH).mock(side_effect=answer)
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    keys = {c.request.headers["Idempotency-Key"] for c in route.calls}
    assert route.call_count == 2 and len(keys) == 1
    assert [o.provider_message_id for o in outcomes if isinstance(o, SendResult)] == ["a", "b"]


async def test_without_a_batch_endpoint_messages_are_sent_concurrently() -> None:
    provider = SendGridProvider.from_config("sendgrid", {"api_key": "SG.key-1234"})
    messages = [msg(0), msg(1), msg(2)]

    def answer(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["subject"] == "m1":
            return httpx.Response(400, json={"errors": [{"message": "bad", "field": None}]})
        return httpx.Response(202, headers={"X-Message-Id": "sg"})

    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("https://api.sendgrid.com/v3/mail/send").mock(side_effect=answer)
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    assert route.call_count == 3
    assert isinstance(outcomes[0], SendResult) and isinstance(outcomes[2], SendResult)
    assert isinstance(outcomes[1], PermanentError) and outcomes[1].provider == "sendgrid"


def big(i: int, megabytes: float) -> Message:
    """A message whose attachment makes it about ``megabytes`` MB as sent (base64)."""
    raw = bytes(int(megabytes * 750_000))  # base64 grows it by 4/3
    return msg(i, attachments=[{"content": raw, "filename": f"f{i}.bin"}])


async def test_postmark_batches_are_cut_to_its_50_mb_payload_limit() -> None:
    messages = [big(i, 9) for i in range(12)]  # 108 MB: at most 5 (45 MB) a request
    outcomes, sizes = await postmark_batches(messages)
    assert sizes == [2, 5, 5]
    assert all(isinstance(o, SendResult) for o in outcomes)


async def test_a_message_over_the_api_limit_is_refused_before_any_io() -> None:
    from mailer import UnsupportedFeature

    provider = postmark()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post("https://api.postmarkapp.com/email")
        batch = router.post(PM_BATCH).mock(
            return_value=httpx.Response(200, json=[pm_ok("r2@example.org", 2)])
        )
        with pytest.raises(UnsupportedFeature, match=r"up to 10.0 MB .* this one is 1[01]\.\d MB"):
            await provider.send(big(0, 10.5))
        outcomes = await provider.send_batch([big(1, 10.5), msg(2)])
    await provider.aclose()
    assert route.call_count == 0
    assert isinstance(outcomes[0], UnsupportedFeature)
    assert isinstance(outcomes[1], SendResult) and batch.call_count == 1
