"""``mailer outbox reconcile`` against local fakes of Resend's, Mailgun's and SendGrid's
lookup APIs. Each fake takes real sends (whose replies the server drops after taking
them, so the rows end ``unknown``), checks that the lookup asks in the documented shape,
and answers from what it took. A row is settled to ``sent`` only on the provider's record
of that message, re-queued only where the record proves it never arrived, else left."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mailer import Mailer
from mailer.providers import _mailgun_records, _resend_lookup
from mailer.testing import FakeResend, HTTPTestServer
from mailer.testing._http import HTTPRequest, Reply

from .reconcile_kit import age_rows, cli_reconcile, config, message, send_lost, states

pytestmark = pytest.mark.anyio


# -- Resend: no search by our key, so its email list is compared with the content -----


async def test_resend_reconcile_compares_the_list_with_the_content(tmp_path: Path) -> None:
    fake = FakeResend()
    async with fake:
        provider = {"type": "resend", "name": "re", "config": fake.config(timeout=5)}
        old = time.time() - 3600  # before every row: the list reaches back past them
        for i in range(5):
            fake.add_email({"from": "a@example.com", "to": [f"old{i}@example.org"],
                            "subject": "s", "text": "t"}, created=old)  # fmt: skip
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            taken = await send_lost(mailer, fake, message("x@example.org"), "accept-drop")
            never = await send_lost(mailer, fake, message("y@example.org"), "drop")
            # not taken; the list has an email to that recipient with that subject whose
            # body differs (Resend may store a rewritten body): no proof either way
            differs = await send_lost(mailer, fake, message("z@example.org", "mine"), "drop")
            fake.add_email({"from": "a@example.com", "to": ["z@example.org"], "subject": "s",
                            "text": "another body"})  # fmt: skip
            # taken, and an identical email was sent too: two match, so no verdict
            twice = await send_lost(mailer, fake, message("w@example.org"), "accept-drop")
            fake.add_email(fake.payloads[-1])
            for i in range(150):  # newer mail: the rows' emails are on the list's 2nd page
                fake.add_email({"from": "b@example.com", "to": [f"n{i}@example.org"],
                                "subject": "news", "text": "n"})  # fmt: skip
            assert (await mailer.outbox.stats())["unknown"] == 4
            assert sum(fake.received.values()) == 2

            report = await mailer.reconcile()
            assert report.settled == [taken]
            assert report.requeued == []  # a fresh row's absence proves nothing yet
            assert sorted(report.left) == sorted([never, differs, twice])

        # the documented request shapes: limit 100, the `after` cursor, retrieve by id
        lists = [p for p in fake.lookups if p.startswith("/emails?")]
        assert all(parse_qs(urlsplit(p).query)["limit"] == ["100"] for p in lists)
        assert any("after" in parse_qs(urlsplit(p).query) for p in lists)
        retrieved = {p.removeprefix("/emails/") for p in fake.lookups if p.startswith("/emails/")}
        assert retrieved <= {e["id"] for e in fake.emails}

        # the CLI, the rows made old: only the row with no candidate at all is re-queued
        age_rows(tmp_path, 3600)
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 1 queued again, 2 left unknown" in out
        assert await states(tmp_path, provider) == {
            taken: "sent",
            never: "queued",
            differs: "unknown",
            twice: "unknown",
        }


async def test_resend_list_that_does_not_reach_back_proves_nothing(tmp_path: Path) -> None:
    """Past the page limit (or the plan's retention) the list ends before the row's
    creation: an old row not found there stays ``unknown``."""
    fake = FakeResend()
    async with fake:
        provider = {"type": "resend", "name": "re", "config": fake.config(timeout=5)}
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            never = await send_lost(mailer, fake, message("y@example.org"), "drop")
            for i in range(_resend_lookup.MAX_PAGES * 100 + 5):
                fake.add_email({"from": "b@example.com", "to": [f"n{i}@example.org"],
                                "subject": "news", "text": "n"})  # fmt: skip
        age_rows(tmp_path, 3600)
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 0 queued again, 1 left unknown" in out
        assert len([p for p in fake.lookups if p.startswith("/emails?")]) == 20
        assert await states(tmp_path, provider) == {never: "unknown"}


# -- Mailgun: the events API filtered by our Message-ID -------------------------------


class FakeMailgun:
    """Mailgun's send (multipart) and events APIs for domain ``mg.example.com``."""

    def __init__(self) -> None:
        self.taken: list[str] = []  # Message-IDs, without <>
        self.rejected: set[str] = set()  # sends Mailgun logs as `rejected`
        self.queries: list[dict[str, list[str]]] = []

    def respond(self, request: HTTPRequest) -> Reply:
        path = urlsplit(request.path).path
        if request.method == "POST" and path == "/v3/mg.example.com/messages":
            found = re.search(rb'name="h:Message-ID"\r\n\r\n<([^>\r]+)>', request.body)
            assert found is not None, "the send carries our Message-ID as h:Message-ID"
            header = found.group(1).decode()
            if header not in self.rejected:
                self.taken.append(header)
            return Reply(200, {"id": f"<{header}>", "message": "Queued. Thank you."})
        if request.method == "GET" and path == "/v3/mg.example.com/events":
            query = parse_qs(urlsplit(request.path).query)
            self.queries.append(query)
            # the documented filter shape: message-id without <>, begin as epoch
            # seconds, ascending, limit at most 300
            header = query["message-id"][0]
            assert not header.startswith("<") and float(query["begin"][0]) < time.time()
            assert query["ascending"] == ["yes"] and int(query["limit"][0]) <= 300
            items: list[dict[str, Any]] = []
            if header in self.taken:
                items = [_mailgun_event("accepted", header), _mailgun_event("delivered", header)]
            elif header in self.rejected:
                items = [_mailgun_event("rejected", header)]
            return Reply(200, {"items": items, "paging": {"next": "https://x/next"}})
        return Reply(404, {"message": "not found"})


def _mailgun_event(event: str, header: str) -> dict[str, Any]:
    return {
        "event": event,
        "id": f"{event}-{header}",
        "timestamp": time.time(),
        "message": {"headers": {"message-id": header}},
        "user-variables": {},
    }


async def test_mailgun_reconcile_reads_the_event_log(tmp_path: Path) -> None:
    fake = FakeMailgun()
    api = HTTPTestServer("ok", respond=fake.respond)
    async with api:
        provider = {"type": "mailgun", "name": "mg", "config": {
            "api_key": "key-x", "domain": "mg.example.com", "base_url": api.base_url,
            "timeout": 5}}  # fmt: skip
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            taken = await send_lost(mailer, api, message("x@example.org"), "accept-drop")
            never = await send_lost(mailer, api, message("y@example.org"), "drop")
            fake.rejected.add("rejected-1@example.com")
            rejected_msg = message("z@example.org").model_copy(
                update={"message_id": "<rejected-1@example.com>"}
            )
            rejected = await send_lost(mailer, api, rejected_msg, "accept-drop")
            assert rejected == "<rejected-1@example.com>"

            report = await mailer.reconcile()
            assert report.settled == [taken]
            # rejected is proof, but a fresh row waits for ABSENT_AFTER all the same
            assert sorted(report.left) == sorted([never, rejected])
        assert {q["message-id"][0] for q in fake.queries} == {
            m.strip("<>") for m in (taken, never, rejected)
        }

        # an empty log proves absence only once complete (30 min) and still kept (1 day)
        age_rows(tmp_path, _mailgun_records.EVENTS_SETTLE + 60)
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 2 queued again, 0 left unknown" in out
        assert await states(tmp_path, provider) == {
            taken: "sent",
            never: "queued",
            rejected: "queued",
        }


async def test_mailgun_empty_log_past_its_retention_proves_nothing(tmp_path: Path) -> None:
    fake = FakeMailgun()
    api = HTTPTestServer("ok", respond=fake.respond)
    async with api:
        provider = {"type": "mailgun", "name": "mg", "config": {
            "api_key": "key-x", "domain": "mg.example.com", "base_url": api.base_url,
            "timeout": 5}}  # fmt: skip
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            never = await send_lost(mailer, api, message("y@example.org"), "drop")
        # created two days ago, last tried an hour ago: its first attempts' events may be
        # gone from the log, so an empty log proves nothing
        age_rows(tmp_path, 3600, created=2 * _mailgun_records.EVENTS_KEPT)
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 0 queued again, 1 left unknown" in out
        assert await states(tmp_path, provider) == {never: "unknown"}
        begin = float(fake.queries[-1]["begin"][0])  # asked back to the row's creation
        assert begin < time.time() - 2 * _mailgun_records.EVENTS_KEPT


# -- SendGrid: the Email Activity API queried by our custom_args key -----------------


class FakeSendGrid:
    """SendGrid's Mail Send and Email Activity (``GET /v3/messages``) APIs."""

    def __init__(self, *, activity: bool = True) -> None:
        self.activity = activity  # False: the account lacks the add-on (403)
        self.taken: dict[str, str] = {}  # our Message-ID -> SendGrid msg_id
        self.queries: list[str] = []

    def respond(self, request: HTTPRequest) -> Reply:
        path = urlsplit(request.path).path
        if request.method == "POST" and path == "/v3/mail/send":
            key = request.json()["custom_args"]["mailer_message_id"]
            self.taken[key] = f"sg-{len(self.taken)}.filter0001"
            return Reply(202, None, headers={"X-Message-Id": f"sg-{len(self.taken) - 1}"})
        if request.method == "GET" and path == "/v3/messages":
            if not self.activity:
                return Reply(403, {"errors": [{"message": "access forbidden"}]})
            query = parse_qs(urlsplit(request.path).query)
            self.queries.append(query["query"][0])
            assert 1 <= int(query["limit"][0]) <= 1000
            found = re.fullmatch(r"unique_args\['mailer_message_id'\]=\"([^\"]+)\"",
                                 query["query"][0])  # fmt: skip
            if found is None:
                return Reply(400, {"errors": [{"message": "invalid query"}]})
            wanted = found.group(1)
            messages = (
                [{"msg_id": self.taken[wanted], "status": "delivered", "to_email": "x",
                  "from_email": "a@example.com", "subject": "s", "opens_count": 0,
                  "clicks_count": 0, "last_event_time": "2026-12-05T00:00:00Z"}]
                if wanted in self.taken else []
            )  # fmt: skip
            return Reply(200, {"messages": messages})
        return Reply(404, {"errors": [{"message": "not found"}]})


async def test_sendgrid_reconcile_searches_the_email_activity(tmp_path: Path) -> None:
    fake = FakeSendGrid()
    api = HTTPTestServer("ok", respond=fake.respond)
    async with api:
        provider = {"type": "sendgrid", "name": "sg", "config": {
            "api_key": "SG.key", "base_url": api.base_url, "timeout": 5}}  # fmt: skip
        async with Mailer.from_config(config(tmp_path, provider, max_attempts=1)) as mailer:
            taken = await send_lost(mailer, api, message("x@example.org"), "accept-drop")
            never = await send_lost(mailer, api, message("y@example.org"), "drop")
            report = await mailer.reconcile()
            assert (report.settled, report.requeued, report.left) == ([taken], [], [never])
        assert fake.queries == [
            f"unique_args['mailer_message_id']=\"{taken}\"",
            f"unique_args['mailer_message_id']=\"{never}\"",
        ]
        age_rows(tmp_path, 3600)
        fake.activity = False  # without the add-on: the row is left, never re-queued
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 0 queued again, 1 left unknown" in out
        fake.activity = True
        out = await cli_reconcile(tmp_path, provider)
        assert b"0 settled to sent, 1 queued again, 0 left unknown" in out
        assert await states(tmp_path, provider) == {taken: "sent", never: "queued"}
