"""``mailer outbox reconcile`` against a local fake of Mandrill's message search.

The fake takes real sends through ``messages/send.json`` (the server drops the reply
after taking one, so the row ends ``unknown``), keeps each message's metadata as
Mandrill does, and answers ``messages/search.json`` in its documented shape: a list of
messages with their ``_id``, ``state`` and ``metadata``, found by ``u_<field>:"value"``
only when the account indexes the field. A hit settles the row ``sent``; nothing found
never re-queues it (Mandrill cannot prove absence).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from mailer import Mailer
from mailer.providers._mandrill_lookup import SEARCH_PATH
from mailer.testing import HTTPTestServer
from mailer.testing._http import HTTPRequest, Reply

from .reconcile_kit import age_rows, config, message, send_lost, states

pytestmark = pytest.mark.anyio

KEY = "md-key-0123456789"
_QUERY = re.compile(r'^u_mailer_message_id:"([^"]+)"$')


class FakeMandrill:
    """Mandrill's send and search; ``indexed``: the account added ``mailer_message_id``
    to its searchable custom metadata."""

    def __init__(self, *, indexed: bool) -> None:
        self.indexed = indexed
        self.messages: list[dict[str, Any]] = []
        self.rejecting: set[str] = set()  # recipients Mandrill rejects (a blacklist)
        self.searches: list[dict[str, Any]] = []

    def respond(self, request: HTTPRequest) -> Reply:
        body = request.json()
        assert body.get("key") == KEY, "the key travels in the body"
        if request.path == "/api/1.3/messages/send.json":
            msg = body["message"]
            (rcpt,) = [to["email"] for to in msg["to"]]
            state = "rejected" if rcpt in self.rejecting else "sent"
            item = {"_id": f"md-{len(self.messages) + 1}", "ts": int(time.time()),
                    "email": rcpt, "state": state, "metadata": dict(msg.get("metadata", {})),
                    "reject_reason": "blacklist" if state == "rejected" else None}  # fmt: skip
            self.messages.append(item)
            return Reply(200, [{"email": rcpt, "status": state, "_id": item["_id"],
                                "reject_reason": item["reject_reason"]}])  # fmt: skip
        if request.path == SEARCH_PATH:
            self.searches.append(body)
            # the documented parameters: a query in Mandrill's search syntax, a
            # YYYY-MM-DD date_from, a limit of at most 1,000
            found = _QUERY.match(body["query"])
            assert found is not None, body["query"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["date_from"])
            assert 0 < body["limit"] <= 1000
            wanted = found.group(1)
            hits = [m for m in self.messages if m["metadata"].get("mailer_message_id") == wanted]
            return Reply(200, hits if self.indexed else [])
        return Reply(500, {"status": "error", "name": "Unknown_Method", "message": "?"})


def mandrill(api: HTTPTestServer) -> dict[str, Any]:
    return {"type": "mandrill", "name": "md",
            "config": {"api_key": KEY, "base_url": api.base_url, "timeout": 5}}  # fmt: skip


async def test_mandrill_reconcile_settles_what_its_search_finds(tmp_path: Path) -> None:
    fake = FakeMandrill(indexed=True)
    api = HTTPTestServer("ok", respond=fake.respond)
    async with api:
        provider = mandrill(api)
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            taken = await send_lost(mailer, api, message("x@example.org"), "accept-drop")
            never = await send_lost(mailer, api, message("y@example.org"), "drop")
            fake.rejecting.add("z@example.org")
            rejected = await send_lost(mailer, api, message("z@example.org"), "accept-drop")
            report = await mailer.reconcile()
        assert report.settled == [taken]
        assert sorted(report.left) == sorted([never, rejected]) and report.requeued == []
        queried = {s["query"] for s in fake.searches}
        assert queried == {f'u_mailer_message_id:"{m}"' for m in (taken, never, rejected)}

        # however old the row, an empty search is no proof: never queued again
        age_rows(tmp_path, 3 * 86400, created=3 * 86400)
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            again = await mailer.reconcile()
        assert again.requeued == [] and sorted(again.left) == sorted([never, rejected])
    assert await states(tmp_path, provider) == {
        taken: "sent", never: "unknown", rejected: "unknown"}  # fmt: skip


async def test_mandrill_without_the_field_indexed_leaves_the_row_unknown(
    tmp_path: Path,
) -> None:
    fake = FakeMandrill(indexed=False)
    api = HTTPTestServer("ok", respond=fake.respond)
    async with api:
        provider = mandrill(api)
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            taken = await send_lost(mailer, api, message("x@example.org"), "accept-drop")
            report = await mailer.reconcile()
    assert report.left == [taken] and report.settled == report.requeued == []
    assert len(fake.messages) == 1 and len(fake.searches) == 1
