"""An outbox row made ``unknown`` by a reply lost after the commit point is settled to
``sent`` by an event from the provider, and never by an event for another message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Mailer, Message
from mailer.testing import SMTPTestServer

from .conftest import event, smtp_entry

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_unknown_row_settled_by_an_event(
    smtp: Callable[..., SMTPTestServer], outbox_url: str
) -> None:
    server = smtp()
    # the message is queued by the server, then the connection drops before its 250
    server.state.fail("DATA_END", "queue-drop", times=2)
    config = {
        "providers": [smtp_entry("primary", server.port, 1)],
        "retry": {"attempts": 1},
        "outbox": {
            "url": outbox_url,
            "lease": 5.0,
            "poll_interval": 0.05,
            "backoff": {"initial": 0.05, "max": 0.05, "jitter": 0.0},
        },
    }
    messages = [
        Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")
        for i in range(2)
    ]
    async with Mailer.from_config(config) as mailer:
        ids = [await mailer.enqueue(m) for m in messages]
        await mailer.drain(timeout=5.0)
        assert (await mailer.outbox.stats())["unknown"] == 2
        assert sum(server.received().values()) == 2  # both were in fact accepted
        mine, other = ids

        # an event for another message, and one that proves nothing, settle nothing
        report = await mailer.ingest_events(
            [
                event(
                    "delivered",
                    provider="primary",
                    message_id="<not-ours@example.com>",
                    event_id="e0",
                ),
                event("rejected", provider="primary", message_id=mine, event_id="e1"),
                event("unknown", provider="primary", message_id=mine, event_id="e2"),
            ]
        )
        assert report.settled == ()
        assert (await mailer.outbox.stats())["unknown"] == 2

        report = await mailer.ingest_events(
            [
                event(
                    "delivered",
                    provider="primary",
                    message_id=mine,
                    recipient="u0@example.org",
                    event_id="e3",
                )
            ]
        )
        assert report.settled == (mine,)
        items = {i.message_id: i for i in await mailer.outbox.items()}
        assert items[mine].state == "sent" and items[mine].provider == "primary"
        assert (items[mine].last_error or "").startswith("settled: primary reported")
        assert items[other].state == "unknown"  # the other row is untouched

        # a duplicate, or a later event, does not settle again; a sent row stays sent
        again = await mailer.ingest_events(
            [event("opened", provider="primary", message_id=mine, event_id="e4")]
        )
        assert again.settled == () and again.new == 1
        # a bounce is proof too: the provider took the message
        bounce = await mailer.ingest_events(
            [event("bounced", bounce="soft", provider="primary", message_id=other, event_id="e5")]
        )
        assert bounce.settled == (other,)
        stats = await mailer.outbox.stats()
        assert (stats["sent"], stats["unknown"]) == (2, 0)
