"""``mailer outbox reconcile`` of a chunked row (a large text or HTML part): Resend can
only be searched by content, and the row's JSON has its large bodies left out, so the
reconcile loads the row as the drain does (texts read from the chunks) and compares the
real bodies, against a local fake of Resend's API on 127.0.0.1, on SQLite and Postgres."""

from __future__ import annotations

import pytest

from mailer import Mailer, Message
from mailer._message.stream import STREAM_THRESHOLD
from mailer._outbox import _chunked
from mailer.testing import FakeResend

from .conftest import fast_outbox, rows

pytestmark = pytest.mark.anyio


async def test_a_chunked_row_taken_by_resend_is_settled_by_its_bodies(db_url: str) -> None:
    """Resend took the large message but its reply was lost (``unknown``); another
    email to the same recipient with the same subject and a different body is on the
    list too. The reconcile matches the taken one by its text and HTML, read from the
    chunks, and settles the row ``sent``; the other stays a non-match."""
    text = "".join(f"line {i} of the report\n" for i in range(STREAM_THRESHOLD // 20))
    html = "<p>caf\u00e9</p>\n" * (STREAM_THRESHOLD // 12)
    fake = FakeResend()
    async with fake:
        provider = {"type": "resend", "name": "re", "config": fake.config(timeout=30)}
        config = {
            "providers": [provider],
            "retry": {"attempts": 1},
            "outbox": fast_outbox(db_url, max_attempts=1),
        }
        async with Mailer.from_config(config) as mailer:
            fake.add_email({"from": "a@example.com", "to": ["x@example.org"],
                            "subject": "report", "text": "an older, small report"})  # fmt: skip
            fake.mode = "accept-drop"
            message = Message(
                sender="a@example.com", to="x@example.org", subject="report", text=text, html=html
            )
            taken = await mailer.enqueue(message)
            await mailer.drain(timeout=30.0)
            fake.mode = "ok"
            (row,) = rows(db_url)
            assert row["state"] == "unknown" and _chunked.is_chunked(bytes(row["raw"]))
            assert fake.payloads[-1]["text"] == text  # what Resend holds: the whole text

            report = await mailer.reconcile()
        assert report.settled == [taken] and report.left == []
        assert (await _states(config)) == {taken: "sent"}


async def _states(config: dict[str, object]) -> dict[str, str]:
    async with Mailer.from_config(config) as mailer:
        return {i.message_id: i.state for i in await mailer.outbox.items(limit=10)}
