"""`mailer demo`, and the loopback servers its verdict rests on.

The demo's "nothing lost, nothing duplicated" is only as good as the servers' counts, so
the SMTP sink and the fake Resend API are tested here directly against independent
clients (the stdlib's smtplib, httpx), outage behaviour included.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailer.testing import FakeResend, LoopThread, SMTPSink


@pytest.mark.slow
def test_demo_runs_to_completion_and_verifies(mailer_cli: Any) -> None:
    result = mailer_cli("demo", timeout=90)
    assert result.code == 0, result.output
    out = result.stdout
    assert "smtp-primary: closed -> open" in out
    assert "smtp-primary: half-open -> closed" in out  # traffic came back to the primary
    assert "0 failed, 0 lost, 0 duplicated, 0 misreported, 0 unexpected" in out
    assert "OK: every message was received exactly once" in out
    rows = {
        line.split("│")[1].strip(): line.split("│")
        for line in out.splitlines()
        if line.startswith("│")
    }
    for name in ("smtp-primary", "http-resend", "smtp-backup"):
        sent, received = rows[name][3].strip(), rows[name][4].strip()
        assert sent == received and int(sent) > 0, rows[name]


def test_small_demo_is_quick(mailer_cli: Any) -> None:
    result = mailer_cli("demo", "--messages", "40", "--rate", "80", timeout=60)
    assert result.code == 0, result.output
    assert "40 sent, 0 failed, 0 lost, 0 duplicated" in result.stdout


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    """An asyncio loop in a thread, so blocking clients can talk to the async servers."""
    with LoopThread() as runner:
        yield runner


MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.org\r\nSubject: dots\r\n"
    b"Message-ID: <dots-1@example.com>\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\n.\r\nafter a lone dot line\r\n"
)


def test_sink_unstuffs_dots_and_counts_by_message_id(loop: LoopThread) -> None:
    sink = SMTPSink("t")
    loop.run(sink.start())
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
            client.ehlo()
            assert client.has_extn("pipelining")
            client.sendmail("a@example.com", ["b@example.org", "c@example.org"], MESSAGE)
            client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert sink.received == {"<dots-1@example.com>": 2}
        assert sink.duplicates == {"<dots-1@example.com>": 2}
        stored = sink.messages[0]
        assert stored.rcpt_to == ("b@example.org", "c@example.org")
        # smtplib dot-stuffed on the way out; the sink gives back exactly what was sent
        assert stored.data.rstrip(b"\r\n") == MESSAGE.rstrip(b"\r\n")
    finally:
        loop.run(sink.stop(grace=0.2))


def test_sink_outage_refuses_new_and_says_421_to_open_connections(loop: LoopThread) -> None:
    sink = SMTPSink("t")
    loop.run(sink.start())
    port = sink.port
    client = smtplib.SMTP("127.0.0.1", port, timeout=5)
    client.ehlo()
    client.mail("a@example.com")  # mid-transaction when the server goes down
    loop.run(sink.stop(grace=0.1))
    code, _ = client.rcpt("b@example.org")
    assert code == 421
    client.close()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)
    assert sink.accepted == 0
    loop.run(sink.start())  # comes back on the same port
    try:
        assert sink.port == port
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as again:
            again.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert sink.accepted == 1
    finally:
        loop.run(sink.stop(grace=0.2))


def test_fake_resend_counts_once_per_idempotency_key_and_throttles(loop: LoopThread) -> None:
    fake = FakeResend(api_key="re_test")
    loop.run(fake.start())
    try:
        body = {
            "from": "a@example.com",
            "to": ["b@example.org"],
            "subject": "s",
            "text": "t",
            "headers": {"Message-ID": "<m1@example.com>"},
        }
        auth = {"Authorization": "Bearer re_test", "Idempotency-Key": "k1"}
        with httpx.Client(base_url=fake.base_url, timeout=5) as http:
            first = http.post("/emails", json=body, headers=auth)
            replay = http.post("/emails", json=body, headers=auth)
            assert first.status_code == replay.status_code == 200
            assert first.json()["id"] == replay.json()["id"]
            assert fake.received == {"<m1@example.com>": 1}
            assert (
                http.post("/emails", json=body, headers={"Authorization": "Bearer x"}).status_code
                == 401
            )
            fake.mode = "429:1"
            limited = http.post("/emails", json=body, headers={**auth, "Idempotency-Key": "k2"})
            assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
            assert (
                http.post("/emails", json={"to": ["x@example.org"]}, headers=auth).status_code
                == 429
            )
            fake.mode = "ok"
            missing = http.post("/emails", json={"to": ["x@example.org"]}, headers=auth)
            assert missing.status_code == 422
        assert fake.accepted == 1
    finally:
        loop.run(fake.stop())
