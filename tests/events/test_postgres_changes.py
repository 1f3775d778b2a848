"""The Postgres change log read in every commit order: a suppression entry whose log row
has a lower number but commits after a higher one a reader already read is still seen by
the next read (the cursor keeps the hole and asks for it again), a late row's address is
read from the list itself, and a hole that never fills (a rolled-back write) makes one
full snapshot after HOLE_WAIT rather than a guess. Against the suite's real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from mailer._events import SuppressionEntry
from mailer._events.postgres import _ADD_ENTRIES, HOLE_WAIT, LogCursor, PostgresBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[PostgresBackend]:
    store = PostgresBackend(pg_url)
    await store.open()
    async with store._p().acquire() as conn:  # a clean list: the database is shared
        await conn.execute("TRUNCATE mailer_suppression, mailer_suppression_log")
    yield store
    await store.close()


def entry(address: str) -> SuppressionEntry:
    return SuppressionEntry(address, "bounced:hard", 1.0, "p", None)


async def begin_add(pg_url: str, address: str) -> tuple[Any, Any]:
    """A writer that has inserted ``address`` (and taken its log number), not committed."""
    conn = await asyncpg.connect(pg_url)
    tx = conn.transaction()
    await tx.start()
    e = entry(address)
    await conn.fetch(_ADD_ENTRIES, [e.address], [e.reason], [e.provider], [e.message_id],
                     [e.created])  # fmt: skip
    return conn, tx


async def test_a_late_commit_is_seen_by_the_next_read(
    backend: PostgresBackend, pg_url: str
) -> None:
    local, cursor = await backend.snapshot()
    assert local == {} and (cursor.seq, cursor.holes) == (0, ())

    slow, slow_tx = await begin_add(pg_url, "late@example.org")  # takes a number first
    await backend.add([entry("early@example.org")])  # a higher number, committed
    changes = await backend.changes(cursor)
    assert changes is not None and set(changes.added) == {"early@example.org"}
    assert [n for n, _ in changes.cursor.holes] == [changes.cursor.seq - 1]

    await slow_tx.commit()  # the lower number commits after the higher was read
    await slow.close()
    later = await backend.changes(changes.cursor)
    assert later is not None and set(later.added) == {"late@example.org"}
    assert later.cursor.holes == ()
    nothing = await backend.changes(later.cursor)
    assert nothing is not None and not nothing.added and not nothing.removed


async def test_a_late_row_gives_the_address_its_current_state(
    backend: PostgresBackend, pg_url: str
) -> None:
    _, cursor = await backend.snapshot()
    slow, slow_tx = await begin_add(pg_url, "x@example.org")
    await backend.add([entry("y@example.org")])
    first = await backend.changes(cursor)
    assert first is not None
    await slow_tx.commit()
    await slow.close()
    assert await backend.remove("x@example.org")  # removed after its late add
    second = await backend.changes(first.cursor)
    # both of x's rows arrive in this read; the list says it is gone, so it is
    assert second is not None and "x@example.org" in second.removed
    assert "x@example.org" not in second.added


async def test_a_hole_that_never_fills_resyncs_once(backend: PostgresBackend, pg_url: str) -> None:
    now = [1000.0]
    backend.clock = lambda: now[0]
    _, cursor = await backend.snapshot()
    slow, slow_tx = await begin_add(pg_url, "gone@example.org")
    await backend.add([entry("kept@example.org")])
    changes = await backend.changes(cursor)
    assert changes is not None and len(changes.cursor.holes) == 1
    await slow_tx.rollback()  # its number is never used
    await slow.close()

    now[0] += HOLE_WAIT - 1  # still waited for: incremental reads go on
    waiting = await backend.changes(changes.cursor)
    assert waiting is not None and len(waiting.cursor.holes) == 1
    now[0] += 2  # past the wait: one full snapshot, then no hole
    assert await backend.changes(waiting.cursor) is None
    local, fresh = await backend.snapshot()
    assert local == {"kept@example.org": "bounced:hard"}
    assert isinstance(fresh, LogCursor)
    after = await backend.changes(fresh)
    assert after is not None and after.cursor.holes == fresh.holes


async def test_a_snapshot_keeps_the_holes_below_its_highest_number(
    backend: PostgresBackend, pg_url: str
) -> None:
    """A write that took its number before a snapshot and commits after it."""
    slow, slow_tx = await begin_add(pg_url, "late@example.org")
    await backend.add([entry("early@example.org")])
    await backend.add([entry("first@example.org")])  # the tail's lowest row is committed
    local, cursor = await backend.snapshot()
    assert set(local) == {"early@example.org", "first@example.org"}
    await slow_tx.commit()
    await slow.close()
    changes = await backend.changes(cursor)
    assert changes is not None and set(changes.added) == {"late@example.org"}
