"""Mandrill's batch form against a local stand-in for its API: messages that differ only
in their one To recipient go in one ``messages/send`` with ``preserve_recipients: false``
and each message's correlation key in ``recipient_metadata``; each gets its own outcome
from its recipient's answer item; any other message is sent alone, exactly as ``send``
sends it; the body is what mailchimp-transactional sends for the same call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailer import DeliveryUncertain, Mailer, Message, RecipientsRefused, SendResult
from mailer.providers import MandrillProvider
from mailer.providers.http.correlation import CORRELATION_KEY
from mailer.testing import HTTPRequest, Reply, serve

pytestmark = pytest.mark.anyio

KEY = "md-batch-key-77"


def receipt(to: str, n: int = 0, **extra: Any) -> Message:
    return Message(sender="Shop <shop@example.com>", to=[to], subject="Your receipt",
                   text="Thanks.", html="<p>Thanks.</p>", tags=["receipts"],
                   metadata={"campaign": "spring"}, message_id=f"<r{n}-{to}>",
                   **extra)  # fmt: skip


class FakeMandrill:
    """``messages/send``: one item per ``to`` entry; ``refuse`` rejected, ``omit`` left
    out of the answer."""

    def __init__(self, refuse: str = "", omit: str = "") -> None:
        self.refuse, self.omit = refuse, omit
        self.bodies: list[dict[str, Any]] = []

    def respond(self, request: HTTPRequest) -> Reply:
        body = request.json()
        self.bodies.append(body)
        items = []
        for n, rcpt in enumerate(body["message"]["to"]):
            if rcpt["email"] == self.omit:
                continue
            if rcpt["email"] == self.refuse:
                items.append({"email": rcpt["email"], "status": "rejected",
                              "reject_reason": "hard-bounce", "_id": f"x{n}"})  # fmt: skip
            else:
                items.append({"email": rcpt["email"], "status": "sent",
                              "reject_reason": None, "_id": f"{len(self.bodies)}-{n}"})  # fmt: skip
        return Reply(200, items)


def provider(base_url: str) -> MandrillProvider:
    return MandrillProvider.from_config("md", {"api_key": KEY, "base_url": base_url})


async def test_same_content_is_one_request_each_its_own_outcome() -> None:
    fake = FakeMandrill(refuse="b@example.org")
    batch = [
        receipt("a@example.org", 0),
        receipt("b@example.org", 1),
        receipt("c@example.org", 2),
        receipt("a@example.org", 3),  # a second one to a: another request
        receipt("d@example.org", 4, cc=["e@example.org"]),  # Cc: sent alone
        receipt("f@example.org", 5).model_copy(update={"subject": "Other"}),
    ]
    async with serve(respond=fake.respond) as api:
        md = provider(api.base_url)
        try:
            outcomes = await md.send_batch(batch)
        finally:
            await md.aclose()
    assert len(fake.bodies) == 4
    merged = next(b["message"] for b in fake.bodies if len(b["message"]["to"]) == 3)
    assert [r["email"] for r in merged["to"]] == ["a@example.org", "b@example.org",
                                                  "c@example.org"]  # fmt: skip
    assert merged["preserve_recipients"] is False
    assert merged["metadata"] == {"campaign": "spring"}
    assert merged["recipient_metadata"] == [
        {"rcpt": m.to[0].email, "values": {CORRELATION_KEY: m.message_id}} for m in batch[:3]
    ]
    assert "Message-ID" not in merged.get("headers", {})  # one headers object for all copies
    alone = [b["message"] for b in fake.bodies if b["message"] is not merged]
    assert all(m["preserve_recipients"] is True and "Message-ID" in m["headers"] for m in alone)
    assert all(b["key"] == KEY for b in fake.bodies)

    a, b, c, a2, d, f = outcomes
    assert isinstance(a, SendResult) and a.accepted == ["a@example.org"]
    assert a.message_id == "<r0-a@example.org>" and a.provider_message_id is not None
    assert isinstance(b, RecipientsRefused) and list(b.refused) == ["b@example.org"]
    assert isinstance(c, SendResult) and c.provider_message_id != a.provider_message_id
    assert all(isinstance(o, SendResult) for o in (a2, d, f))
    assert d.accepted == ["d@example.org", "e@example.org"]  # type: ignore[union-attr]


async def test_a_recipient_the_answer_does_not_name_is_uncertain() -> None:
    fake = FakeMandrill(omit="b@example.org")
    async with serve(respond=fake.respond) as api:
        md = provider(api.base_url)
        try:
            outcomes = await md.send_batch([receipt("a@example.org"), receipt("b@example.org")])
        finally:
            await md.aclose()
    assert len(fake.bodies) == 1
    assert isinstance(outcomes[0], SendResult)
    assert isinstance(outcomes[1], DeliveryUncertain)


async def test_send_many_merges_concurrent_sends_of_one_content() -> None:
    fake = FakeMandrill()
    batch = [receipt(f"u{n}@example.org", n) for n in range(40)]
    async with serve(respond=fake.respond) as api, Mailer([provider(api.base_url)]) as mailer:
        results = await asyncio.wait_for(mailer.send_many(batch), 30)
    assert all(isinstance(r, SendResult) for r in results)
    assert sum(len(b["message"]["to"]) for b in fake.bodies) == 40
    assert len(fake.bodies) < 40  # merged


async def test_merged_body_is_the_sdks(tmp_path: Any) -> None:
    """The merged request is what mailchimp-transactional posts for the documented
    one-content-to-many call (``preserve_recipients: false``, ``recipient_metadata``)."""
    import mailchimp_transactional

    fake = FakeMandrill()
    batch = [receipt("a@example.org", 0), receipt("b@example.org", 1)]
    async with serve(respond=fake.respond) as api:
        md = provider(api.base_url)
        try:
            await md.send_batch(batch)
        finally:
            await md.aclose()

        def sdk() -> Any:
            client = mailchimp_transactional.Client(KEY)
            client.api_client.host = f"{api.base_url}/api/1.3"
            return client.messages.send({"message": {
                "from_email": "shop@example.com", "from_name": "Shop",
                "subject": "Your receipt", "text": "Thanks.", "html": "<p>Thanks.</p>",
                "to": [{"email": "a@example.org", "type": "to"},
                       {"email": "b@example.org", "type": "to"}],
                "preserve_recipients": False, "tags": ["receipts"],
                "metadata": {"campaign": "spring"},
                "recipient_metadata": [
                    {"rcpt": m.to[0].email, "values": {CORRELATION_KEY: m.message_id}}
                    for m in batch],
            }})  # fmt: skip

        await asyncio.to_thread(sdk)
    ours, theirs = fake.bodies
    assert ours == theirs
