"""Ingest: stored once (dedupe by provider and event id), applied once, on every store;
listeners, the counter's hook, and an event that only carries the provider's id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mailer import DeliveryEvent, Mailer, Message, SyncMailer
from mailer.testing import FakeResend, MemoryProvider

from .conftest import event

pytestmark = pytest.mark.anyio


async def test_duplicates_are_stored_and_applied_once(any_url: str | None) -> None:
    seen: list[DeliveryEvent] = []
    async with Mailer([MemoryProvider("primary")], suppression={"store": any_url}) as mailer:
        mailer.on_delivery(seen.append)
        bounce = event("bounced", bounce="hard", event_id="b1", message_id="<m1@x>")
        first = await mailer.ingest_events([bounce, bounce, event("opened", event_id="o1")])
        assert (first.new, first.duplicates, first.suppressed) == (2, 1, ("user@example.org",))
        again = await mailer.ingest_events([bounce])  # the ESP retried the same post
        assert (again.new, again.duplicates, again.suppressed) == (0, 1, ())
        # the same id from another provider is another event
        other = await mailer.ingest_events([event("delivered", event_id="b1", provider="backup")])
        assert other.new == 1
        assert [e.event_id for e in seen] == ["b1", "o1", "b1"]
        # without an ESP id, the same content is the same event
        plain = event("delivered", message_id="<m1@x>")
        assert (await mailer.ingest_events([plain])).new == 1
        assert (await mailer.ingest_events([plain])).duplicates == 1
        stored = await mailer.delivery_events("m1@x")
        assert [(e.type, e.event_id) for e in stored] == [("bounced", "b1"), ("delivered", None)]
        assert (await mailer.ingest_events([])).new == 0


async def test_events_go_into_the_outbox_database(tmp_path: Path) -> None:
    """No suppression store, an outbox: events land in the outbox's SQLite file."""
    import sqlite3

    db = tmp_path / "outbox.db"
    async with Mailer([MemoryProvider("p")], outbox=f"sqlite:///{db}") as mailer:
        await mailer.ingest_events([event("delivered", event_id="d1", message_id="<a@b>")])
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT event_key, message_id FROM mailer_events").fetchall() == [
            ("d1", "<a@b>")
        ]


async def test_listeners_sync_async_failing_and_unsubscribed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def slow(e: DeliveryEvent) -> None:
        calls.append(f"async {e.event_id}")

    def broken(e: DeliveryEvent) -> None:
        raise RuntimeError("listener bug")

    async with Mailer([MemoryProvider("p")]) as mailer:
        mailer.on_delivery(broken)
        undo = mailer.on_delivery(lambda e: calls.append(f"sync {e.event_id}"))
        mailer.on_delivery(slow)
        with caplog.at_level(logging.INFO, logger="mailer"):
            await mailer.ingest_events([event(event_id="1")])
        undo()
        undo()  # twice is harmless
        await mailer.ingest_events([event(event_id="2")])
    assert calls == ["sync 1", "async 1", "async 2"]
    assert any("listener raised RuntimeError" in r.getMessage() for r in caplog.records)
    (record,) = [r for r in caplog.records if r.__dict__.get("event") == "delivery"]
    assert record.__dict__["delivery_event"] == "delivered"
    assert record.__dict__["provider"] == "primary"


async def test_bad_input_is_refused_before_anything_is_stored() -> None:
    async with Mailer([MemoryProvider("p")]) as mailer:
        with pytest.raises(TypeError, match="DeliveryEvents"):
            await mailer.ingest_events([event(event_id="1"), {"type": "delivered"}])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="at most"):
            await mailer.ingest_events([event(event_id=str(i)) for i in range(10_001)])
        assert (await mailer.ingest_events([event(event_id="1")])).new == 1


@pytest.mark.parametrize("store", ["sqlite", "postgresql", "redis"])
async def test_provider_id_finds_the_message_id(
    http_fake: FakeResend, request: pytest.FixtureRequest, tmp_path: Path, store: str
) -> None:
    """A real HTTP send records (provider, provider id) -> Message-ID; an event carrying
    only the provider's id, ingested by another Mailer on the same store, gets it."""
    from .conftest import store_url

    url = store_url(store, request, tmp_path)
    config: dict[str, Any] = {
        "providers": [{"type": "resend", "name": "resend", "config": http_fake.config()}],
        "defaults": {"sender": "app@example.com"},
        "suppression": url,
    }
    async with Mailer.from_config(config) as sender:
        result = await sender.send(Message(to=["u@example.org"], subject="s", text="t"))
        assert result.provider_message_id
    # closed: its buffered records were flushed; a webhook process reads them
    async with Mailer.from_config(config) as receiver:
        report = await receiver.ingest_events(
            [
                event(
                    "delivered",
                    provider="resend",
                    recipient="u@example.org",
                    provider_message_id=result.provider_message_id,
                    event_id="r1",
                ),
                event(
                    "delivered", provider="resend", provider_message_id="unknown-id", event_id="r2"
                ),
            ]
        )
        assert report.new == 2
        (mine,) = await receiver.delivery_events(result.message_id or "")
        assert mine.event_id == "r1" and mine.provider_message_id == result.provider_message_id


async def test_same_process_lookup_needs_no_flush(http_fake: FakeResend) -> None:
    config = {
        "providers": [{"type": "resend", "name": "resend", "config": http_fake.config()}],
        "defaults": {"sender": "app@example.com"},
    }
    seen: list[DeliveryEvent] = []
    async with Mailer.from_config(config) as mailer:
        mailer.on_delivery(seen.append)
        result = await mailer.send(Message(to=["u@example.org"], subject="s", text="t"))
        await mailer.ingest_events(
            [event("accepted", provider="resend", provider_message_id=result.provider_message_id)]
        )
    assert [e.message_id for e in seen] == [result.message_id]


def test_sync_mailer_ingest_and_listener() -> None:
    seen: list[str] = []
    with SyncMailer(lambda: Mailer([MemoryProvider("p")])) as m:
        undo = m.on_delivery(lambda e: seen.append(e.type))
        report = m.ingest_events([event("clicked", event_id="c"), event("opened", event_id="o")])
        assert report.new == 2
        undo()
        m.ingest_events([event("clicked", event_id="c2")])
        assert [e.type for e in m.delivery_events("nothing@x")] == []
    assert seen == ["clicked", "opened"]


async def test_retention_purges_old_events(any_url: str | None) -> None:
    async with Mailer(
        [MemoryProvider("p")], suppression={"store": any_url}, events={"retention": "1d"}
    ) as mailer:
        await mailer.ingest_events([event(event_id="old", message_id="<a@b>")])
        assert await mailer.purge_events() == 0  # stored just now: kept
        assert len(await mailer.delivery_events("a@b")) == 1
    async with Mailer(
        [MemoryProvider("p")], suppression={"store": any_url}, events={"retention": 0.001}
    ) as mailer:
        if any_url is None or not any_url.startswith("redis"):
            import anyio

            await anyio.sleep(0.01)
            await mailer.ingest_events([event(event_id="x", message_id="<c@d>")])
            await anyio.sleep(0.01)
            assert await mailer.purge_events() >= 1
            assert await mailer.delivery_events("c@d") == []


async def test_a_failed_suppression_write_stores_no_event(tmp_path: Path) -> None:
    """Events and their suppressions are one transaction when one store holds both: if
    the suppression write fails, the batch is not stored either, so the ESP's retry is
    new, not a duplicate whose suppression was never written."""
    import sqlite3

    db = tmp_path / "mail.db"
    async with Mailer([MemoryProvider("p")], suppression=f"sqlite:///{db}") as mailer:
        await mailer.ingest_events([event(event_id="warm-up")])  # the schema exists
        with sqlite3.connect(db) as conn:
            conn.execute(
                "CREATE TRIGGER fail BEFORE INSERT ON mailer_suppression"
                " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        complaint = event("complained", event_id="c1", recipient="angry@example.org")
        with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
            await mailer.ingest_events([event(event_id="d1"), complaint])
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER fail")
            assert conn.execute("SELECT count(*) FROM mailer_events").fetchone() == (1,)
        retry = await mailer.ingest_events([event(event_id="d1"), complaint])
        assert (retry.new, retry.suppressed) == (2, ("angry@example.org",))


async def test_two_stores_write_the_suppressions_first(tmp_path: Path) -> None:
    """Events in the outbox's file, the list in another: the suppressions are written
    before the events, so a failure between the two leaves the events unstored and the
    ESP's retry applies them (the other order would lose the suppression for good, the
    retry being a duplicate). Failures injected with SQLite triggers on the real files."""
    import sqlite3

    outbox, lst = tmp_path / "outbox.db", tmp_path / "list.db"
    async with Mailer(
        [MemoryProvider("p")], outbox=f"sqlite:///{outbox}", suppression=f"sqlite:///{lst}"
    ) as mailer:
        await mailer.ingest_events([event(event_id="warm-up")])  # both schemas exist
        complaint = event("complained", event_id="c1", recipient="angry@example.org")
        batch = [event(event_id="d1"), complaint]

        # the events' write fails after the suppressions were written
        with sqlite3.connect(outbox) as conn:
            conn.execute("CREATE TRIGGER fail BEFORE INSERT ON mailer_events"
                         " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
            await mailer.ingest_events(batch)
        assert await mailer.suppression.get("angry@example.org") is not None
        with sqlite3.connect(outbox) as conn:
            conn.execute("DROP TRIGGER fail")
        retry = await mailer.ingest_events(batch)  # the ESP's redelivery: new, applied
        assert (retry.new, retry.duplicates, retry.suppressed) == (2, 0, ())

        # the list's write fails: nothing of the batch is stored, the retry is new
        bounce = event("bounced", bounce="hard", event_id="b1", recipient="gone@example.org")
        with sqlite3.connect(lst) as conn:
            conn.execute("CREATE TRIGGER fail BEFORE INSERT ON mailer_suppression"
                         " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
            await mailer.ingest_events([bounce])
        with sqlite3.connect(lst) as conn:
            conn.execute("DROP TRIGGER fail")
        with sqlite3.connect(outbox) as conn:
            stored = conn.execute("SELECT count(*) FROM mailer_events WHERE event_key = 'b1'")
            assert stored.fetchone() == (0,)
        retry = await mailer.ingest_events([bounce])
        assert (retry.new, retry.suppressed) == (1, ("gone@example.org",))
