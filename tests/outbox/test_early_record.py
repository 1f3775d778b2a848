"""The commit-point record started with the transaction (mailer._outbox._commit), and
enqueues grouped into one statement: real SMTP server, both stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailer import Mailer
from mailer._outbox import OutboxConfig
from mailer._outbox.postgres import PostgresStore
from mailer._outbox.store import NewMessage
from mailer._outbox.worker import open_store
from mailer.testing import SMTPTestServer

from .conftest import fast_outbox, make_message, rows, smtp_entry

pytestmark = pytest.mark.anyio


def _config(port: int, url: str) -> dict[str, Any]:
    return {
        "providers": [smtp_entry("s", port, 1)],
        "retry": {"attempts": 1},
        # the record per attempt, started early (the claim's own record: test_claim_record)
        "outbox": fast_outbox(url, commit_record="attempt"),
    }


async def test_the_record_overlaps_the_envelope_and_lands_before_the_end_of_data(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """A record that takes 0.8 s and a server that answers MAIL 0.8 s late: the two
    overlap (one after the other took 1.6 s), and the message reaches the server only
    after the record is written."""
    server = smtp()
    server.state.fail("MAIL", "delay:0.8:", times=1)
    async with Mailer.from_config(_config(server.port, db_url)) as m:
        mid = await m.enqueue(make_message(1))
        store: Any = m.outbox.store
        mark = store.mark_committing
        seen: list[dict[str, int]] = []

        async def slow_mark(row: int, claim: str, provider: str | None) -> bool:
            await asyncio.sleep(0.8)
            ok: bool = await mark(row, claim, provider)
            seen.append(server.received())  # what the server had when it was written
            return ok

        store.mark_committing = slow_mark
        start = time.monotonic()
        assert await m.drain(timeout=10) == {"sent": 1}
        elapsed = time.monotonic() - start
    assert seen == [{}]  # nothing had reached the server before the record
    assert server.received() == {mid: 1}
    assert elapsed < 1.4, elapsed
    (row,) = rows(db_url)
    assert row["state"] == "sent" and row["committed"] and row["provider"] == "s"


async def test_a_record_started_for_an_attempt_refused_before_its_commit_point_is_harmless(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """RCPT refused (451) once: the early record was written for that attempt, yet the
    message is queued again as before (not ``unknown``), then delivered once."""
    server = smtp()
    server.state.fail("RCPT", "451 4.3.0 later", times=1)
    async with Mailer.from_config(_config(server.port, db_url)) as m:
        mid = await m.enqueue(make_message(1))
        store: Any = m.outbox.store
        mark, finish = store.mark_committing, store.finish
        events: list[str] = []

        async def counted_mark(*args: Any) -> bool:
            ok: bool = await mark(*args)
            events.append(f"mark {ok}")
            return ok

        async def counted_finish(row: int, claim: str, outcome: Any) -> bool:
            events.append(f"finish {outcome.state}")
            ok: bool = await finish(row, claim, outcome)
            return ok

        store.mark_committing, store.finish = counted_mark, counted_finish
        assert await m.drain(timeout=10) == {"queued": 1, "sent": 1}
    # the first attempt's record landed before its result, which is "queued"
    assert events == ["mark True", "finish queued", "mark True", "finish sent"]
    assert server.received() == {mid: 1}
    (row,) = rows(db_url)
    assert (row["state"], row["attempts"]) == ("sent", 2)


def _item(i: int, *, subject: str | None = None, mid: str | None = None) -> NewMessage:
    message = make_message(i)
    update: dict[str, Any] = {}
    if subject is not None:
        update["subject"] = subject
    if mid is not None:
        update["message_id"] = mid
    message = message.model_copy(update=update)
    assert message.message_id is not None
    return NewMessage(
        message.message_id, message.model_dump_json().encode(), message.as_bytes(), time.time()
    )


async def test_concurrent_enqueues_keep_the_first_of_a_message_id_given_twice(
    db_url: str,
) -> None:
    """20 enqueues at once, one Message-ID three times and one already stored: as one
    enqueue after another, the first message is kept and the others answer False; the
    rows are numbered in the order given. On Postgres they share statements."""
    store = open_store(OutboxConfig(url=db_url))
    await store.open()
    statements: list[int] = []
    if isinstance(store, PostgresStore):
        write = store._adds._write

        async def counted(items: Sequence[NewMessage]) -> Sequence[bool]:
            statements.append(len(items))
            return await write(items)

        store._adds._write = counted
    try:
        stored = _item(100)
        assert await store.add(stored)
        items = [_item(i) for i in range(20)]
        twice = items[3].message_id
        items[7] = _item(7, subject="second", mid=twice)
        items[12] = _item(12, subject="third", mid=twice)
        items[15] = _item(15, subject="again", mid=stored.message_id)
        results = await asyncio.gather(*(store.add(item) for item in items))
        expected = [i not in (7, 12, 15) for i in range(20)]
        assert list(results) == expected
        got = rows(db_url)
        assert [r["message_id"] for r in got] == [
            stored.message_id,
            *(item.message_id for item, new in zip(items, expected, strict=True) if new),
        ]
        by_id = {r["message_id"]: r for r in got}
        assert bytes(by_id[twice]["message"]) == items[3].message_json
        assert bytes(by_id[stored.message_id]["message"]) == stored.message_json
        if isinstance(store, PostgresStore):
            assert sum(statements) == 21 and len(statements) < 21  # grouped
    finally:
        await store.close()
