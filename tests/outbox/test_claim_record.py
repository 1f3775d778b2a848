"""The commit point recorded by the claim itself (``commit_record = "claim"``, the default
without a rate limit): no write per message, the lease checked by the worker's own clock
at the commit point, and ``reconcile`` for rows whose provider was not recorded. Real
SMTP server, both stores."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from mailer import Mailer
from mailer._outbox import OutboxConfig
from mailer._outbox.reconcile import reconcile
from mailer._outbox.worker import open_store
from mailer.providers.http.lookup import Lookup
from mailer.testing import ScriptedProvider, SMTPTestServer

from .conftest import add_messages, fast_outbox, make_message, rows, smtp_entry

pytestmark = pytest.mark.anyio


def _config(port: int, url: str, **outbox: Any) -> dict[str, Any]:
    return {
        "providers": [smtp_entry("s", port, 1)],
        "retry": {"attempts": 1},
        "outbox": fast_outbox(url, **outbox),
    }


async def test_no_write_per_message_and_the_provider_recorded_with_the_result(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """20 messages: the claims record every commit point (no ``mark_committing`` at
    all), each message is delivered once, and the row names its provider."""
    server = smtp()
    async with Mailer.from_config(_config(server.port, db_url)) as m:
        assert m.outbox is not None and m.outbox.commit_at_claim
        ids = [await m.enqueue(make_message(i)) for i in range(20)]
        store: Any = m.outbox.store
        marks: list[int] = []

        async def counted(row: int, claim: str, provider: str | None) -> bool:
            marks.append(row)
            return True

        store.mark_committing = counted
        assert await m.drain(timeout=20) == {"sent": 20}
    assert marks == []
    assert server.received() == dict.fromkeys(ids, 1)
    assert {(r["state"], bool(r["committed"]), r["provider"]) for r in rows(db_url)} == {
        ("sent", True, "s")
    }


@pytest.mark.parametrize(
    ("given", "rate_limited", "at_claim"),
    [
        ("auto", False, True),
        ("auto", True, False),  # a claimed send may wait: the record waits for its attempt
        ("claim", True, True),
        ("attempt", False, False),
    ],
)
def test_where_the_record_is_made(given: str, rate_limited: bool, at_claim: bool) -> None:
    entry: dict[str, Any] = {"type": "memory", "name": "m"}
    if rate_limited:
        entry["rate_limit"] = {"messages": 10, "per": 1}
    outbox = {"url": "sqlite:///unused.db", "commit_record": given}
    mailer = Mailer.from_config({"providers": [entry], "outbox": outbox})
    assert mailer.outbox is not None
    assert mailer.outbox.commit_at_claim is at_claim


def test_commit_record_is_checked() -> None:
    with pytest.raises(ValueError, match="commit_record"):
        OutboxConfig(url="sqlite:///x.db", commit_record="never")  # type: ignore[arg-type]


@pytest.mark.parametrize("heartbeat", ["working", "failing"])
async def test_the_lease_is_checked_at_the_commit_point_by_the_workers_clock(
    heartbeat: str,
    db_url: str,
    smtp: Callable[..., SMTPTestServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 0.5 s lease and a server that answers MAIL 0.8 s late, once. With a working
    heartbeat the renews carry the lease past the commit point: sent at once. With a
    failing one the worker's view of its lease ends (0.45 s after the claim was sent)
    before the commit point: the attempt does not cross, the message is queued again,
    then sent by the next attempt; it reaches the server once."""
    server = smtp()
    server.state.fail("MAIL", "delay:0.8:", times=1)
    async with Mailer.from_config(_config(server.port, db_url, lease=0.5)) as m:
        mid = await m.enqueue(make_message(1))
        store: Any = m.outbox.store
        if heartbeat == "failing":

            async def broken(owner: str, *, lease: float) -> int:
                raise ConnectionError("the database is unreachable")

            store.renew = broken
        with caplog.at_level(logging.INFO, logger="mailer.outbox"):
            counts = await m.drain(timeout=20)
    assert server.received() == {mid: 1}
    if heartbeat == "working":
        assert counts == {"sent": 1}
    else:
        assert counts == {"queued": 1, "sent": 1}
        assert "lease on the message may have expired" in caplog.text
    (row,) = rows(db_url)
    assert row["state"] == "sent"


class _Looked(ScriptedProvider):
    """A provider with a lookup that answers ``verdict`` for every message."""

    def __init__(self, name: str, verdict: str) -> None:
        super().__init__(name)
        self.verdict = verdict
        self.asked: list[str] = []

    async def lookup(self, message_id: str, **_: Any) -> Lookup:
        self.asked.append(message_id)
        return Lookup(self.verdict, f"{self.name} says {self.verdict}")  # type: ignore[arg-type]


async def _unknown_without_provider(db_url: str, n: int) -> list[str]:
    """``n`` rows left ``unknown`` with no provider: claimed with the commit point
    recorded, then their lease expired (a worker that died before any result)."""
    store = open_store(OutboxConfig(url=db_url))
    await store.open()
    try:
        ids = await add_messages(store, n)
        claimed = await store.claim("died", n, lease=0.2, max_age=3600, commit=True)
        assert len(claimed) == n and all(c.committed for c in claimed)
        time.sleep(0.3)
        assert await store.claim("other", n, lease=30, max_age=3600) == []  # settles them
    finally:
        await store.close()
    assert {(r["state"], r["provider"]) for r in rows(db_url)} == {("unknown", None)}
    return ids


@pytest.mark.parametrize(
    ("verdicts", "settled_by", "requeued"),
    [
        (("absent", "sent"), "b", False),  # one provider took it: settled, naming it
        (("absent", "absent"), None, True),  # every provider says absent
        (("absent", "unknown"), None, False),  # one cannot say: left for a person
    ],
)
async def test_reconcile_asks_every_provider_when_none_is_recorded(
    verdicts: tuple[str, str], settled_by: str | None, requeued: bool, db_url: str
) -> None:
    (mid,) = await _unknown_without_provider(db_url, 1)
    a, b = _Looked("a", verdicts[0]), _Looked("b", verdicts[1])
    async with Mailer([a, b], outbox=fast_outbox(db_url)) as m:
        assert m.outbox is not None
        report = await reconcile(m.outbox, m.providers, absent_after=0.0)
    assert a.asked == [mid] and b.asked == [mid]  # both asked
    (row,) = rows(db_url)
    if settled_by is not None:
        assert report.settled == [mid]
        assert (row["state"], row["provider"]) == ("sent", settled_by)
    elif requeued:
        assert report.requeued == [mid] and row["state"] == "queued"
    else:
        assert report.left == [mid] and row["state"] == "unknown"


@pytest.mark.parametrize("answer_after", [0.0, 0.2])
async def test_a_renew_extends_the_workers_view_only_when_it_answered_within_the_margin(
    answer_after: float, db_url: str
) -> None:
    """Lease 1 s, margin 0.1 s. A renew answered at once moves the known end of every
    claim still held when it was sent; one answered after the margin (it may have run
    after a lease expired) moves none, and a claim already past its end stays past."""
    from mailer._outbox.claiming import Worker
    from mailer._outbox.worker import Outbox

    async def no_send(*_: Any) -> Any:
        raise AssertionError("nothing is sent here")

    outbox = Outbox(OutboxConfig(url=db_url, lease=1.0), no_send)
    store: Any = outbox.store
    await store.open()
    try:
        await add_messages(store, 2)
        worker = Worker(outbox, 4)
        live, gone = await store.claim(worker.owner, 2, lease=1.0, max_age=3600, commit=True)
        now = time.monotonic()
        worker._held = {live.claim: now + 0.5, gone.claim: now - 0.01}
        renew = store.renew

        async def answered_late(owner: str, *, lease: float) -> int:
            n: int = await renew(owner, lease=lease)
            await asyncio.sleep(answer_after)
            return n

        store.renew = answered_late
        await worker._renew(store, 1.0)
        if answer_after == 0.0:
            assert worker._held[live.claim] >= now + 0.9 - 0.05  # sent + lease - margin
            assert worker._holds(live.claim)()
        else:
            assert worker._held[live.claim] == now + 0.5
        assert worker._held[gone.claim] == now - 0.01
        assert not worker._holds(gone.claim)()
    finally:
        await store.close()
