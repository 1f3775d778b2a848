"""The SQLite store's writer hand-over and its set-based claim (branch drainspeed): the
operations of one event-loop iteration reach the writer thread together, and a claim
leases all of its rows in two statements, each row under a claim of its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailer._outbox.sqlite import SQLiteStore
from mailer._outbox.store import Outcome

from .conftest import add_messages

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the SQLite store runs on asyncio only


async def test_an_operation_made_just_before_close_is_still_answered(tmp_path: Path) -> None:
    """An operation waits for the end of its loop iteration to reach the writer; a
    close() in that same iteration hands it over before stopping the writer, so its
    caller is answered rather than left waiting for ever."""
    store = SQLiteStore(tmp_path / "outbox.db")
    await store.open()
    await add_messages(store, 3)
    stats = asyncio.ensure_future(store.stats())
    await asyncio.sleep(0)  # the task made its operation; the hand-over is still to come
    await store.close()
    async with asyncio.timeout(10):
        counts = await stats
    assert counts["queued"] == 3


async def test_operations_made_together_are_answered_each_with_its_own_result(
    tmp_path: Path,
) -> None:
    """Records and results made in one iteration share a group: each still gets its own
    answer, a lost claim's False among them, and only the rows whose claims held change."""
    store = SQLiteStore(tmp_path / "outbox.db")
    try:
        await store.open()
        await add_messages(store, 6)
        claimed = await store.claim("w", 6, lease=30, max_age=3600)
        assert len(claimed) == 6
        first, second, *rest = claimed
        answers = await asyncio.gather(
            store.mark_committing(first.row, first.claim, "smtp"),
            store.mark_committing(second.row, "not-the-claim", "smtp"),
            store.finish(rest[0].row, rest[0].claim, Outcome("sent", provider="smtp")),
            store.finish(rest[1].row, rest[2].claim, Outcome("sent")),  # another row's claim
            store.finish(rest[2].row, rest[2].claim, Outcome("failed", error="550 no")),
        )
        assert answers == [True, False, True, False, True]
        by_id = {item.message_id: item for item in await store.items()}
        assert by_id[first.message_id].committed and by_id[first.message_id].provider == "smtp"
        assert not by_id[second.message_id].committed
        assert [by_id[c.message_id].state for c in rest] == ["sent", "sending", "failed", "sending"]
    finally:
        await store.close()


async def test_one_claim_leases_due_rows_in_order_each_under_its_own_claim(
    tmp_path: Path,
) -> None:
    """Two statements lease every row of a claim: the rows come back oldest first (the
    order RETURNING gives is not relied on), every claim differs, and one row's claim
    does not hold for another row."""
    store = SQLiteStore(tmp_path / "outbox.db")
    try:
        await store.open()
        ids = await add_messages(store, 5)
        claimed = await store.claim("w", 10, lease=30, max_age=3600)
        assert [c.message_id for c in claimed] == ids
        assert len({c.claim for c in claimed}) == 5
        assert all(c.attempts == 1 and c.raw for c in claimed)
        a, b = claimed[0], claimed[1]
        assert not await store.mark_committing(a.row, b.claim, "smtp")
        assert await store.mark_committing(a.row, a.claim, "smtp")
        assert await store.claim("other", 10, lease=30, max_age=3600) == []  # all leased
        for c in claimed:
            assert await store.finish(c.row, c.claim, Outcome("queued", next_at=time.time()))
        again = await store.claim("other", 10, lease=30, max_age=3600)
        assert [c.message_id for c in again] == ids
        assert {c.claim for c in again}.isdisjoint(c.claim for c in claimed)
    finally:
        await store.close()


_AT_EXIT = """
import logging, os, sys, tempfile
logging.basicConfig(level=logging.WARNING)  # the library logs through a NullHandler
from mailer import Message
from mailer._integrations.tasks import mailer_for
folder = tempfile.mkdtemp()
sync = mailer_for({
    "providers": [{"name": "m", "type": "memory"}],
    "defaults": {"sender": "app@example.com"},
    "outbox": {"url": "sqlite:///" + os.path.join(folder, "outbox.db")},
})
sync.enqueue(Message(to=["user@example.org"], subject="at exit", text="closed by atexit"))
print("enqueued", flush=True)
"""


def test_a_shared_mailer_closed_at_interpreter_exit_closes_its_store_cleanly(
    tmp_path: Path,
) -> None:
    """The process's shared mailers are closed by an atexit hook, after the interpreter
    has stopped handing work to executors: the store's close must not need one (it used
    to join its writer through ``asyncio.to_thread`` and logged "closing a shared mailer
    failed: cannot schedule new futures after interpreter shutdown", and the rest of the
    close, the providers' QUIT included, was skipped)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "enqueued" in done.stdout
    assert "closing a shared mailer failed" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
