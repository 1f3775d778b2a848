"""MailerSend's bulk endpoint against a local stand-in for its API: one POST for the
batch, then the status polled until ``completed`` gives each message its own outcome
(sent with its id, refused by validation as a single send's 422 would be, suppressed
recipients rejected); a poll that runs out, or a ``failed`` bulk, leaves every message
DeliveryUncertain (never sent again), within the configured wait."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mailer import AuthError, DeliveryUncertain, Mailer, Message, PermanentError, SendResult
from mailer.providers import MailerSendProvider
from mailer.testing import HTTPRequest, Reply, serve

pytestmark = pytest.mark.anyio


def messages(count: int) -> list[Message]:
    return [
        Message(sender="shop@example.com", to=[f"u{n}@example.org", f"v{n}@example.org"],
                subject=f"order {n}", text=f"body {n}")
        for n in range(count)
    ]  # fmt: skip


#: a bulk's id as MailerSend's look, but for the bulk's number at the end
BULK = "614470d1588b866d0454f3e"


class FakeBulk:
    """POST /v1/bulk-email -> 202 and the bulk's id; GET -> ``states`` one poll at a
    time, then ``final`` (the data of a completed bulk). Without ``final``, each bulk
    completes with an id per message it carried, ``m<n>`` for "order <n>": however
    ``send_many``'s sends were grouped into bulks (a loaded machine's late timer can cut
    one batch into two), each message gets its own id."""

    def __init__(self, states: list[str], final: dict[str, Any] | None = None) -> None:
        self.states = list(states)
        self.final = final
        self.posted: list[Any] = []
        self.polls = 0
        self.singles = 0

    def respond(self, request: HTTPRequest) -> Reply:
        if request.method == "POST" and request.path == "/v1/bulk-email":
            self.posted.append(request.json())
            return Reply(202, {"message": "The bulk email is being processed.",
                               "bulk_email_id": f"{BULK}{len(self.posted)}"})  # fmt: skip
        if request.method == "POST" and request.path == "/v1/email":
            self.singles += 1
            return Reply(202, {}, headers={"X-Message-Id": f"single-{self.singles}"})
        bulk = request.path.removeprefix(f"/v1/bulk-email/{BULK}")
        assert bulk.isdigit() and 1 <= int(bulk) <= len(self.posted), request.path
        self.polls += 1
        state = self.states.pop(0) if self.states else "completed"
        data: dict[str, Any] = {"id": f"{BULK}{bulk}", "state": state}
        if state == "completed":
            body = self.posted[int(bulk) - 1]
            data |= self.final or {
                "messages_id": [f"m{item['subject'].split()[-1]}" for item in body]
            }
        return Reply(200, {"data": data})


def provider(base_url: str, **extra: Any) -> MailerSendProvider:
    return MailerSendProvider.from_config(
        "ms", {"api_key": "ms-key", "base_url": base_url, "bulk": True, **extra}
    )


async def test_completed_bulk_gives_each_message_its_outcome() -> None:
    final = {
        "total_recipients_count": 8, "validation_errors_count": 2,
        "validation_errors": {
            "message.1.from.email": ["The from.email domain must be verified in your account "
                                     "to send emails. #MS42207"],
            "message.3": {"subject": ["The subject field is required."]},
        },
        "suppressed_recipients_count": 1,
        "suppressed_recipients": {"message.2": {"to": {"v2@example.org": ["hard_bounced"]}}},
        "messages_id": ["ms-a", "ms-b"],  # one per message taken (0 and 2), in order
    }  # fmt: skip
    fake = FakeBulk(["queued", "processing"], final)
    async with serve(respond=fake.respond) as api:
        ms = provider(api.base_url)
        try:
            outcomes = await ms.send_batch(messages(4))
        finally:
            await ms.aclose()
    assert len(fake.posted) == 1 and len(fake.posted[0]) == 4
    assert [item["subject"] for item in fake.posted[0]] == [f"order {n}" for n in range(4)]
    assert fake.polls == 3 and fake.singles == 0
    first, sender, suppressed, invalid = outcomes
    assert isinstance(first, SendResult) and first.provider_message_id == "ms-a"
    assert first.accepted == ["u0@example.org", "v0@example.org"]
    assert isinstance(sender, AuthError)  # as a single send's 422 on from: fails over
    assert "#MS42207" in str(sender)
    assert isinstance(suppressed, SendResult) and suppressed.provider_message_id == "ms-b"
    assert suppressed.accepted == ["u2@example.org"]
    assert list(suppressed.rejected) == ["v2@example.org"]
    assert isinstance(invalid, PermanentError) and "subject" in str(invalid)


@pytest.mark.parametrize("state", ["processing", "failed"])
async def test_unfinished_or_failed_bulk_is_uncertain_for_each(state: str) -> None:
    fake = FakeBulk([state] * 1000)
    async with serve(respond=fake.respond) as api:
        ms = provider(api.base_url, bulk_wait=0.6)
        started = time.monotonic()
        try:
            outcomes = await ms.send_batch(messages(3))
        finally:
            await ms.aclose()
    elapsed = time.monotonic() - started
    assert all(isinstance(o, DeliveryUncertain) for o in outcomes)
    assert all(f"is {state}" in str(o) for o in outcomes)
    assert elapsed < 5.0
    if state == "processing":
        assert 2 <= fake.polls <= 4  # 0.25 s, then 0.5 s: bounded by bulk_wait
    else:
        assert fake.polls == 1


async def test_unreadable_status_is_polled_again_then_uncertain() -> None:
    polls = 0

    def respond(request: HTTPRequest) -> Reply:
        nonlocal polls
        if request.method == "POST":
            return Reply(202, {"bulk_email_id": "b1"})
        polls += 1
        return Reply(500, {"message": "Server Error"})

    async with serve(respond=respond) as api:
        ms = provider(api.base_url, bulk_wait=0.5)
        try:
            outcomes = await ms.send_batch(messages(2))
        finally:
            await ms.aclose()
    assert polls >= 2
    assert all(isinstance(o, DeliveryUncertain) for o in outcomes)


async def test_bulk_is_off_by_default_and_send_many_uses_it_when_on() -> None:
    fake = FakeBulk([])
    async with serve(respond=fake.respond) as api:
        plain = MailerSendProvider.from_config("ms", {"api_key": "k", "base_url": api.base_url})
        try:
            outcomes = await plain.send_batch(messages(2))
        finally:
            await plain.aclose()
        assert [type(o) for o in outcomes] == [SendResult, SendResult]
        assert (fake.singles, len(fake.posted)) == (2, 0)

        async with Mailer([provider(api.base_url)]) as mailer:
            results = await mailer.send_many(messages(3))
        assert [r.provider_message_id for r in results] == ["m0", "m1", "m2"]  # type: ignore[union-attr]
        assert sum(len(body) for body in fake.posted) == 3 and fake.singles == 2


def test_bulk_wait_is_checked() -> None:
    for wait in (0, -1, 601):
        with pytest.raises(Exception, match="bulk_wait"):
            MailerSendProvider.from_config("ms", {"api_key": "k", "bulk": True, "bulk_wait": wait})
