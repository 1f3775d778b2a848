"""``mailer suppression sync`` against local fakes of SES's, Postmark's, SendGrid's and
Mailgun's suppression-list APIs (tests/events/suppression_apis.py): every page read, each
entry imported with the right reason and provider, a second run adds nothing, a dry run
writes nothing, ``suppression.on`` decides what is imported, a refusing API is reported
while the others are imported, and a synced address is refused before any I/O."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mailer import Mailer, Message, RecipientsSuppressed
from mailer._events.sync import sync
from mailer.testing import HTTPTestServer

from .suppression_apis import DOMAIN, SuppressionAPIs

pytestmark = pytest.mark.anyio


def fill(apis: SuppressionAPIs) -> None:
    apis.ses = [(f"ses{i}@example.org", "BOUNCE") for i in range(2300)]
    apis.ses += [("shared@example.org", "COMPLAINT")]  # also in SendGrid's bounces
    apis.postmark = [("pm-hard@example.org", "HardBounce"),
                     ("pm-spam@example.org", "SpamComplaint"),
                     ("pm-unsub@example.org", "ManualSuppression")]  # fmt: skip
    apis.sendgrid["bounces"] = [f"sg{i}@Example.ORG" for i in range(600)] + ["shared@example.org"]
    apis.sendgrid["spam_reports"] = ["sg-spam@example.org"]
    apis.sendgrid["unsubscribes"] = ["sg-unsub@example.org"]
    apis.mailgun["bounces"] = [f"mg{i}@example.org" for i in range(1500)] + ["not-an-address"]
    apis.mailgun["complaints"] = ["mg-spam@example.org"]
    apis.mailgun["unsubscribes"] = ["mg-unsub@example.org"]


def config(tmp_path: Path, apis: SuppressionAPIs, base_url: str, **suppression: Any) -> Any:
    return {
        "providers": [*apis.providers(base_url),
                      {"type": "resend", "name": "re", "config": {"api_key": "re_x",
                       "base_url": base_url}}],
        "suppression": {"store": f"sqlite:///{tmp_path / 'mail.db'}", **suppression},
    }  # fmt: skip


async def cli(tmp_path: Path, cfg: Any, *args: str) -> anyio.abc.Process | Any:
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps(cfg))
    # a process of its own, awaited: the fake APIs run on this test's event loop
    with anyio.fail_after(120):
        command = [sys.executable, "-m", "mailer", "suppression", "sync", "--config",
                   str(path), *args]  # fmt: skip
        return await anyio.run_process(command, check=False)


async def entries(tmp_path: Path, cfg: Any) -> dict[str, Any]:
    async with Mailer.from_config(cfg) as mailer:
        found: list[Any] = []
        while True:
            page = await mailer.suppression.list(10000, len(found))
            found += page
            if len(page) < 10000:
                return {e.address: e for e in found}


async def test_sync_imports_every_list_once(tmp_path: Path) -> None:
    apis = SuppressionAPIs()
    fill(apis)
    server = HTTPTestServer("ok", respond=apis.respond)
    async with server:
        cfg = config(tmp_path, apis, server.base_url)
        total = 2301 + 3 + 603 + 1503

        done = await cli(tmp_path, cfg, "--dry-run")
        assert done.returncode == 0, done.stderr
        # 4,405 addresses: one invalid Mailgun address skipped, "shared" counted once
        assert f"{total} listed, 4408 would add (dry run: nothing written)".encode() in done.stdout
        assert b"no suppression list to read from: re" in done.stdout
        assert await entries(tmp_path, cfg) == {}

        done = await cli(tmp_path, cfg)
        assert done.returncode == 0, done.stderr
        assert f"{total} listed, 4408 added".encode() in done.stdout
        assert b"mg\tbounced:hard\t1501\t1500\t1" in done.stdout
        # every page of every list was read, as each API pages
        assert apis.pages["/v2/email/suppression/addresses"] == 2 * 3  # 1000+1000+301
        assert apis.pages["/v3/suppression/bounces"] == 2 * 2  # 500 + 101
        assert apis.pages[f"/v3/{DOMAIN}/bounces"] == 2 * 3  # 1000 + 501 + an empty page

        listed = await entries(tmp_path, cfg)
        assert len(listed) == 4408
        assert listed["ses7@example.org"].reason == (
            "bounced:hard: SES account suppression list (BOUNCE)"
        )
        assert listed["ses7@example.org"].provider == "ses"
        assert listed["ses7@example.org"].created == 1_764_000_000.5
        assert listed["pm-spam@example.org"].reason.startswith("complained: Postmark outbound")
        assert listed["pm-unsub@example.org"].reason.startswith("unsubscribed: ")
        assert listed["sg5@example.org"].reason == (
            "bounced:hard: SendGrid bounces (550 5.1.1 no such user)"
        )
        assert listed["sg-spam@example.org"].provider == "sg"
        assert listed["mg-unsub@example.org"].reason.startswith("unsubscribed: Mailgun")
        assert listed["shared@example.org"].provider == "ses"  # the first entry is kept

        done = await cli(tmp_path, cfg)  # idempotent
        assert done.returncode == 0, done.stderr
        assert f"{total} listed, 0 added".encode() in done.stdout
        assert len(await entries(tmp_path, cfg)) == 4408


async def test_sync_follows_suppression_on_and_reports_a_refusal(tmp_path: Path) -> None:
    apis = SuppressionAPIs()
    fill(apis)
    apis.refuse.add("/v3/suppression/spam_reports")  # a key without that scope
    server = HTTPTestServer("ok", respond=apis.respond)
    async with server:
        cfg = config(tmp_path, apis, server.base_url, on=["bounced:hard", "complained"])
        async with Mailer.from_config(cfg) as mailer:
            report = await sync(mailer.suppression, mailer.providers, only=["sg", "pm"])
            assert set(report.errors) == {"sg"} and "403" in report.errors["sg"]
            counts = {(c.provider, c.kind): (c.listed, c.added, c.skipped)
                      for c in report.counts.values()}  # fmt: skip
            assert counts == {
                ("pm", "bounced:hard"): (1, 1, 0),
                ("pm", "complained"): (1, 1, 0),
                ("pm", "unsubscribed"): (1, 0, 1),  # not in suppression.on
                ("sg", "bounced:hard"): (601, 601, 0),  # read before the refusal: kept
            }
            assert await mailer.suppression.get("pm-unsub@example.org") is None

            # a synced address is refused before any I/O, whichever provider
            before = server.requests
            with pytest.raises(RecipientsSuppressed) as caught:
                await mailer.send(Message(sender="a@example.com", to=["sg3@example.org"],
                                          subject="s", text="t"))  # fmt: skip
            assert caught.value.suppressed["sg3@example.org"].startswith("bounced:hard")
            assert server.requests == before

        done = await cli(tmp_path, cfg, "--provider", "sg")
        assert done.returncode == 1
        assert b"1 provider list(s) could not be read in full" in done.stderr
        assert b"sg: AuthError: [sg] HTTP 403 credentials refused" in done.stderr
        done = await cli(tmp_path, cfg, "--provider", "nope")
        assert done.returncode == 2 and b"no provider named 'nope'" in done.stderr


async def test_sync_needs_a_shared_store(tmp_path: Path) -> None:
    apis = SuppressionAPIs()
    cfg = {"providers": apis.providers("http://127.0.0.1:9")}
    done = await cli(tmp_path, cfg)
    assert done.returncode == 2 and b"no suppression.store in the config" in done.stderr
