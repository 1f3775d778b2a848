"""Grouped writes: the Postgres store sends the commit-point records and results of
concurrent attempts as one statement (mailer.outbox._batch), and the SQLite store the
results as one operation of its writer thread; each row still checked against its own
claim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mailer._outbox import OutboxConfig
from mailer._outbox._batch import Batcher
from mailer._outbox.postgres import PostgresStore
from mailer._outbox.sqlite import SQLiteStore
from mailer._outbox.store import Outcome
from mailer._outbox.worker import open_store

from .conftest import add_messages, execute, rows

pytestmark = pytest.mark.anyio


async def test_concurrent_records_and_results_share_a_statement_each_checked_by_claim(
    pg_url: str,
) -> None:
    store = open_store(OutboxConfig(url=pg_url))
    assert isinstance(store, PostgresStore)
    await store.open()
    statements: list[int] = []
    write = store._write

    async def counted(items: Sequence[Any]) -> list[Any]:
        statements.append(len(items))
        return await write(items)

    store._writes._write = counted
    try:
        await add_messages(store, 6)
        c = await store.claim("a", 10, lease=30, max_age=3600)
        assert len(c) == 6
        # rows 4 and 5 were taken over by another worker (their lease expired)
        execute(pg_url, "UPDATE outbox SET claim = 'other' WHERE id IN (?, ?)", c[4].row, c[5].row)

        # a lone record goes at once, in a statement of its own
        assert await store.mark_committing(c[0].row, c[0].claim, "smtp")
        assert statements == [1]

        results = await asyncio.gather(
            store.mark_committing(c[1].row, c[1].claim, "smtp"),
            store.mark_committing(c[4].row, c[4].claim, "smtp"),  # lost: must not cross
            store.finish(c[0].row, c[0].claim, Outcome("sent", provider="smtp")),
            store.finish(c[2].row, c[2].claim, Outcome("failed", error="550 no\x00such")),
            store.finish(
                c[3].row,
                c[3].claim,
                Outcome("queued", next_at=time.time() + 60, error="451", pin="resend"),
            ),
            store.finish(c[5].row, c[5].claim, Outcome("sent")),  # lost
        )
        assert list(results) == [True, False, True, True, True, False]
        assert sum(statements) == 7 and len(statements) < 7  # grouped
        by_id = {r["id"]: r for r in rows(pg_url)}
        assert by_id[c[0].row]["state"] == "sent" and by_id[c[0].row]["committed"]
        assert by_id[c[1].row]["state"] == "sending" and by_id[c[1].row]["committed"]
        assert by_id[c[2].row]["state"] == "failed"
        assert by_id[c[2].row]["last_error"] == "550 no\ufffdsuch"  # NUL cannot be stored
        assert (by_id[c[3].row]["state"], by_id[c[3].row]["pin"]) == ("queued", "resend")
        for lost in (c[4], c[5]):
            assert (by_id[lost.row]["state"], by_id[lost.row]["committed"]) == ("sending", False)
    finally:
        await store.close()


async def test_sqlite_results_written_together_each_checked_by_claim(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    store = open_store(OutboxConfig(url=url))
    assert isinstance(store, SQLiteStore)
    await store.open()
    groups: list[int] = []
    write = store._finish_many

    async def counted(items: Sequence[Any]) -> list[bool]:
        groups.append(len(items))
        return await write(items)

    store._finish_many = counted  # type: ignore[method-assign]
    try:
        await add_messages(store, 6)
        c = await store.claim("a", 10, lease=30, max_age=3600)
        assert len(c) == 6
        # row 4 was taken over by another worker (its lease expired)
        execute(url, "UPDATE outbox SET claim = 'other' WHERE id = ?", c[4].row)

        # a lone result goes at once, in an operation of its own
        assert await store.finish(c[0].row, c[0].claim, Outcome("sent", provider="smtp"))
        assert groups == [1]

        # all of a group written (one statement for every row)
        assert await asyncio.gather(
            store.finish(c[1].row, c[1].claim, Outcome("failed", error="550 no")),
            store.finish(c[2].row, c[2].claim, Outcome("sent", provider="smtp")),
        ) == [True, True]
        # a group with a lost claim: written again row by row, to say which
        results = await asyncio.gather(
            store.finish(
                c[3].row,
                c[3].claim,
                Outcome("queued", next_at=time.time() + 60, error="451", pin="resend"),
            ),
            store.finish(c[4].row, c[4].claim, Outcome("sent")),  # lost
            store.finish(c[5].row, c[5].claim, Outcome("unknown", error="timeout")),
        )
        assert list(results) == [True, False, True]
        assert groups == [1, 2, 3]
        by_id = {r["id"]: r for r in rows(url)}
        assert (by_id[c[0].row]["state"], by_id[c[0].row]["provider"]) == ("sent", "smtp")
        assert (by_id[c[1].row]["state"], by_id[c[1].row]["last_error"]) == ("failed", "550 no")
        assert by_id[c[2].row]["state"] == "sent"
        assert (by_id[c[3].row]["state"], by_id[c[3].row]["pin"]) == ("queued", "resend")
        assert (by_id[c[4].row]["state"], by_id[c[4].row]["claim"]) == ("sending", "other")
        assert by_id[c[5].row]["state"] == "unknown"
        assert all(by_id[x.row]["lease_owner"] is None for x in c if x is not c[4])
    finally:
        await store.close()


async def _gather_in_order(batcher: Batcher[int, bool], items: Sequence[int]) -> list[object]:
    return list(await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True))


def _gated(refuse: int | None = None) -> tuple[Batcher[int, bool], list[list[int]], asyncio.Event]:
    """A Batcher whose first statement stays "in flight" until the event is set; every
    statement is recorded; a statement holding ``refuse`` fails; even items are
    "written"."""
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def write(items: Sequence[int]) -> list[bool]:
        calls.append(list(items))
        if len(calls) == 1:
            await gate.wait()
        if refuse in items:
            raise ValueError("refused")
        return [i % 2 == 0 for i in items]

    return Batcher(write), calls, gate


async def test_batcher_sends_a_lone_write_at_once_and_groups_what_waits() -> None:
    batcher, calls, gate = _gated()
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert calls == [[0]]  # sent without waiting for company
    rest = asyncio.create_task(_gather_in_order(batcher, [1, 2, 3]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [[0]]  # waiting for the statement in flight
    gate.set()
    assert await first is True
    assert await rest == [False, True, False]
    assert calls == [[0], [1, 2, 3]]


async def test_batcher_a_failing_batch_fails_only_its_bad_item() -> None:
    batcher, calls, gate = _gated(refuse=13)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    rest = asyncio.create_task(_gather_in_order(batcher, [2, 13, 4]))
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set()
    assert await first is True
    got = await rest
    assert got[0] is True and got[2] is True
    assert isinstance(got[1], ValueError)
    assert calls == [[0], [2, 13, 4], [2], [13], [4]]


async def test_batcher_a_cancelled_caller_does_not_cancel_the_others() -> None:
    gate = asyncio.Event()
    written: list[int] = []

    async def write(items: Sequence[int]) -> list[bool]:
        await gate.wait()
        written.extend(items)
        return [True for _ in items]

    batcher: Batcher[int, bool] = Batcher(write)
    a = asyncio.create_task(batcher.submit(1))
    b = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await b is True
    assert a.cancelled()
    await batcher.aclose()
    assert written == [1, 2]  # the cancelled caller's write was still applied


async def test_a_server_that_does_not_flush_commits_is_warned_about(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    name = f"lazy_{time.time_ns()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
        conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off".encode())
    for url, warned in ((pg_url, False), (pg_url.rsplit("/", 1)[0] + f"/{name}", True)):
        caplog.clear()
        store = open_store(OutboxConfig(url=url))
        with caplog.at_level("WARNING", logger="mailer.outbox"):
            await store.open()
        await store.close()
        assert any("synchronous_commit=off" in r.getMessage() for r in caplog.records) is warned
