"""``mailer outbox reconcile`` against a local fake of Postmark's API: two sends whose
replies were lost (``unknown``); Postmark's outbound search (by our Metadata key) lists
one, which is settled to ``sent``; the other is absent, and is queued again only once the
row is older than the search's lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mailer import Mailer
from mailer._outbox import reconcile as reconcile_module
from mailer._outbox.reconcile import reconcile
from mailer.providers.http import lookup
from mailer.testing import HTTPTestServer
from mailer.testing._http import HTTPRequest, Reply

from .reconcile_kit import age_rows, cli_reconcile, config, message, states

pytestmark = pytest.mark.anyio


class FakePostmark:
    """Takes sends (whose replies the server's script drops) and answers the outbound
    message search from what it took."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}  # our Message-ID -> Postmark's MessageID
        self.searches: list[dict[str, list[str]]] = []

    def respond(self, request: HTTPRequest) -> Reply:
        if request.method == "POST":
            body = request.json()
            self.taken[body["Metadata"]["mailer_message_id"]] = f"pm-{len(self.taken)}"
            return Reply(200, {"MessageID": "lost", "ErrorCode": 0})
        query = parse_qs(urlsplit(request.path).query)
        self.searches.append(query)
        wanted = query["metadata_mailer_message_id"][0]
        found = (
            [{"MessageID": self.taken[wanted], "Status": "Sent"}] if wanted in self.taken else []
        )
        return Reply(200, {"TotalCount": len(found), "Messages": found})


def postmark(base_url: str) -> dict[str, Any]:
    return {"type": "postmark", "name": "pm",
            "config": {"server_token": "pm-token", "base_url": base_url, "timeout": 5}}  # fmt: skip


async def test_reconcile_settles_and_requeues_on_the_providers_record(tmp_path: Path) -> None:
    fake = FakePostmark()
    # 1st send: taken, reply lost; 2nd: dropped before it was taken (never arrived)
    api = HTTPTestServer("ok", script=["accept-drop", "drop"], respond=fake.respond)
    async with api:
        async with Mailer.from_config(config(tmp_path, postmark(api.base_url))) as mailer:
            taken = await mailer.enqueue(message("x@example.org"))
            await mailer.drain(timeout=10.0)
            lost = await mailer.enqueue(message("y@example.org"))
            await mailer.drain(timeout=10.0)
            assert (await mailer.outbox.stats())["unknown"] == 2
            assert list(fake.taken) == [taken]

            report = await mailer.reconcile()
            assert (report.settled, report.requeued, report.left) == ([taken], [], [lost])
            # an empty search for a fresh row proves nothing: the index may lag

            report = await reconcile(mailer.outbox, mailer.providers, absent_after=0.0)
            assert report.settled == [] and report.left == [lost]  # the lookup said "unknown"
        assert await states(tmp_path, postmark(api.base_url)) == {taken: "sent", lost: "unknown"}
        assert all(s["metadata_mailer_message_id"][0] in (taken, lost) for s in fake.searches)

        # the CLI, with the row made old: the provider's record proves absence -> re-queued
        age_rows(tmp_path, 3600)
        out = await cli_reconcile(tmp_path, postmark(api.base_url))
        assert b"0 settled to sent, 1 queued again, 0 left unknown" in out
        assert await states(tmp_path, postmark(api.base_url)) == {taken: "sent", lost: "queued"}


def test_the_two_absence_thresholds_agree() -> None:
    """The outbox keeps its own copy so that `import mailer` does not load httpx."""
    assert reconcile_module.ABSENT_AFTER == lookup.ABSENT_AFTER
