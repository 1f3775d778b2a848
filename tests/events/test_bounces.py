"""SMTP bounces: real-format samples (Postfix's bounce(8) messages, RFC 5965's example
report) parsed, ingested, and suppressing their recipients; and the CLI pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailer import Mailer, RecipientsSuppressed, SyncMailer, bounces
from mailer.testing import MemoryProvider

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).parent / "samples"
MID = "<20231129.receipt.42@app.example.com>"


def sample(name: str, message_id: str = MID) -> bytes:
    return (SAMPLES / name).read_bytes().replace(b"<{MID}>", message_id.encode())


def test_postfix_hard_bounce() -> None:
    (e,) = bounces.parse(sample("postfix_hard.eml"), provider="primary")
    assert (e.type, e.bounce, e.provider) == ("bounced", "hard", "primary")
    assert e.recipient == "nobody@example.net"  # Final-Recipient, domain lowercased
    assert e.message_id == MID  # from the returned message's headers
    assert e.reason is not None and e.reason.startswith("550 5.1.1 <nobody@example.net>")
    assert "User unknown in virtual mailbox table" in e.reason  # folded lines joined
    assert e.timestamp.isoformat() == "2023-11-29T10:10:09+00:00"
    assert e.event_id == "<20231129101010.3F2A61C0F5@mx.example.org>/nobody@example.net"


def test_postfix_delay_notice_is_deferred_and_headers_only_return_still_correlates() -> None:
    (e,) = bounces.parse(sample("postfix_delayed.eml"))
    assert (e.type, e.bounce, e.recipient) == ("deferred", None, "slow@example.net")
    assert e.message_id == MID  # from text/rfc822-headers
    assert e.reason == "connect to mx.example.net[192.0.2.25]:25: Connection timed out"


def test_soft_failure_status() -> None:
    raw = sample("postfix_hard.eml").replace(b"Status: 5.1.1", b"Status: 4.2.2")
    (e,) = bounces.parse(raw)
    assert (e.type, e.bounce) == ("bounced", "soft")


def test_arf_report() -> None:
    (e,) = bounces.parse(sample("arf_rfc5965.eml"))
    assert (e.type, e.recipient, e.message_id) == ("complained", "user@example.com", MID)
    assert e.reason == "feedback report: abuse"
    not_spam = sample("arf_rfc5965.eml").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    assert bounces.parse(not_spam) == []


def test_not_a_report() -> None:
    assert bounces.parse(b"From: a@b\r\nSubject: out of office\r\n\r\nback monday\r\n") == []
    assert bounces.parse(b"") == []
    with pytest.raises(ValueError, match="bytes"):
        bounces.parse("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refused"):
        bounces.parse(b"x" * (bounces.MAX_REPORT_BYTES + 1))


async def test_dsn_and_arf_suppress_their_recipients(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mail.db'}"
    provider = MemoryProvider("primary")
    async with Mailer([provider], suppression=url, defaults={"sender": "app@example.com"}) as m:
        hard = await m.ingest_bounce(sample("postfix_hard.eml"))
        arf = await m.ingest_bounce(sample("arf_rfc5965.eml"))
        delayed = await m.ingest_bounce(sample("postfix_delayed.eml"))
        again = await m.ingest_bounce(sample("postfix_hard.eml"))
        assert hard.suppressed == ("nobody@example.net",) and hard.new == 1
        assert arf.suppressed == ("user@example.com",)
        assert delayed.suppressed == () and delayed.new == 1  # a delay suppresses nobody
        assert (again.new, again.duplicates) == (0, 1)  # the same report is one event
        for address in ("nobody@example.net", "user@example.com"):
            with pytest.raises(RecipientsSuppressed) as caught:
                await m.send(_message(address))
            assert address in caught.value.suppressed
        await m.send(_message("slow@example.net"))
        assert provider.calls == 1  # the suppressed sends never reached it
        stored = await m.delivery_events(MID)
        assert [e.type for e in stored] == ["complained", "bounced", "deferred"]  # by time


def test_sync_mailer_ingest_bounce() -> None:
    with SyncMailer(lambda: Mailer([MemoryProvider("primary")])) as m:
        report = m.ingest_bounce(sample("postfix_hard.eml"))
        assert report.suppressed == ("nobody@example.net",)
        entry = m.suppression.get("nobody@example.net")
        assert entry is not None and entry.reason.startswith("bounced:hard: 550 5.1.1")


def test_cli_pipe_from_the_mta(tmp_path: Path) -> None:
    config = tmp_path / "mailer.toml"
    config.write_text(
        f'providers = ["memory://"]\nsuppression = "sqlite:///{tmp_path / "mail.db"}"\n'
    )
    run = [sys.executable, "-m", "mailer", "bounces", "ingest", "--config", str(config), "-"]
    done = subprocess.run(run, input=sample("arf_rfc5965.eml"), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"suppressed: user@example.com" in done.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "mailer", "suppression", "list", "--config", str(config)],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert "user@example.com\tcomplained: feedback report: abuse\tsmtp" in listing.stdout
    events = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "events",
            "list",
            "--config",
            str(config),
            "--message-id",
            MID.strip("<>"),
        ],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert events.returncode == 0, events.stderr
    assert "\tcomplained\tsmtp\tuser@example.com\t" in events.stdout


def _message(to: str) -> object:
    from mailer import Message

    return Message(to=[to], subject="hi", text="body")
