"""Recipients the server defers or refuses, against a real aiosmtpd server.

"452 4.5.3 too many recipients" (RFC 5321 section 4.5.3.1.10) means: send the rest in
another transaction. The server here takes ``max_recipients`` per transaction and answers
452 beyond, as Postfix does past ``smtpd_recipient_limit``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from mailer import Mailer, Message, RecipientsDeferred, RecipientsRefused, TransientError
from mailer.providers._memory import MemoryProvider
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer

pytestmark = pytest.mark.anyio

SENDER = "app@example.com"


def addresses(n: int, domain: str = "example.org") -> list[str]:
    return [f"r{i}@{domain}" for i in range(n)]


def message(bcc: list[str], subject: str = "many") -> Message:
    # Bcc: the envelope carries them all, the header none (10,000 in To would be silly)
    return Message(sender=SENDER, to=[bcc[0]], bcc=bcc[1:], subject=subject, text="hello")


def delivered(server: SMTPTestServer) -> list[str]:
    return [rcpt for envelope in server.state.messages for rcpt in envelope.rcpt_tos]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_ten_thousand_recipients_to_a_server_taking_100(
    smtp_server: Callable[..., SMTPTestServer], pipelining: bool
) -> None:
    server = smtp_server(pipelining=pipelining)
    server.state.max_recipients = 100
    recipients = addresses(10_000)
    provider = SMTPProvider.from_config("p", server.config(socket_timeout=30.0))
    with anyio.fail_after(100):  # a bound, not a speed check
        result = await provider.send(message(recipients))
    assert result.accepted == recipients
    assert result.rejected == {}
    # each recipient delivered exactly once, in transactions of at most 100
    assert Counter(delivered(server)) == Counter(recipients)
    assert len(server.state.messages) == 100
    assert all(len(e.rcpt_tos) == 100 for e in server.state.messages)
    # on one connection: a new transaction, not a new session
    assert server.state.connections == 1
    assert server.state.verbs().count("EHLO") == 1
    await provider.aclose()


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_refused_and_deferred_recipients_mixed_across_transactions(
    smtp_server: Callable[..., SMTPTestServer], pipelining: bool
) -> None:
    server = smtp_server(pipelining=pipelining)
    server.state.max_recipients = 2
    server.state.fail("RCPT", "550 5.1.1 no such user", match="bad@")
    recipients = [
        "r0@example.org",
        "bad@example.org",
        "r1@example.org",
        "r2@example.org",
        "r3@example.org",
    ]
    provider = SMTPProvider.from_config("p", server.config())
    result = await provider.send(message(recipients))
    assert result.accepted == [
        "r0@example.org",
        "r1@example.org",
        "r2@example.org",
        "r3@example.org",
    ]
    assert result.rejected == {"bad@example.org": "550 5.1.1 no such user"}
    assert [e.rcpt_tos for e in server.state.messages] == [
        ["r0@example.org", "r1@example.org"],
        ["r2@example.org", "r3@example.org"],
    ]
    await provider.aclose()


async def test_552_too_many_recipients_is_read_as_452(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    server.state.max_recipients = 3
    server.state.too_many_reply = "552 Too many recipients"  # RFC 821's code for it
    recipients = addresses(7)
    provider = SMTPProvider.from_config("p", server.config())
    result = await provider.send(message(recipients))
    assert result.accepted == recipients
    assert [len(e.rcpt_tos) for e in server.state.messages] == [3, 3, 1]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_a_later_transaction_failing_reports_partial_delivery_and_never_fails_over(
    smtp_server: Callable[..., SMTPTestServer], pipelining: bool
) -> None:
    """The first transaction's end of data is the commit point: a later failure must not
    fail the message over (the backup would send it again to r0 and r1)."""
    server = smtp_server(pipelining=pipelining)
    server.state.max_recipients = 2
    server.state.fail("DATA_END", "451 4.3.0 queue full, try later", skip=1, times=1)
    recipients = addresses(5)
    backup = MemoryProvider("backup")
    mailer = Mailer([SMTPProvider.from_config("smtp", server.config()), backup])
    result = await mailer.send(message(recipients))
    assert result.provider == "smtp"
    assert result.accepted == ["r0@example.org", "r1@example.org"]
    assert set(result.rejected) == {"r2@example.org", "r3@example.org", "r4@example.org"}
    for address in ("r2@example.org", "r3@example.org"):
        assert result.rejected[address].startswith("not sent: ")
        assert "451 4.3.0 queue full" in result.rejected[address]
    assert "not sent" in result.rejected["r4@example.org"]
    assert backup.calls == 0
    assert delivered(server) == ["r0@example.org", "r1@example.org"]
    await mailer.aclose()


async def test_a_later_transaction_without_a_verdict_is_reported_uncertain(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    server.state.max_recipients = 2
    server.state.fail("DATA_END", "hang", skip=1, times=1)
    recipients = addresses(5)
    provider = SMTPProvider.from_config("p", server.config(socket_timeout=0.5))
    result = await provider.send(message(recipients))
    assert result.accepted == ["r0@example.org", "r1@example.org"]
    for address in ("r2@example.org", "r3@example.org"):
        assert result.rejected[address].startswith("uncertain, it may have been delivered")
    assert result.rejected["r4@example.org"].startswith("not sent: ")
    await provider.aclose()


async def test_a_later_transaction_whose_recipients_are_all_refused(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    server.state.max_recipients = 2
    server.state.fail("RCPT", "550 5.1.1 no such user", match="x@")
    recipients = ["r0@example.org", "r1@example.org", "x@example.org", "x@example.net"]
    provider = SMTPProvider.from_config("p", server.config())
    result = await provider.send(message(recipients))
    assert result.accepted == ["r0@example.org", "r1@example.org"]
    assert result.rejected == {
        "x@example.org": "550 5.1.1 no such user",
        "x@example.net": "550 5.1.1 no such user",
    }
    assert len(server.state.messages) == 1


async def test_a_server_taking_none_is_a_transient_recipients_error(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    server.state.max_recipients = 0
    provider = SMTPProvider.from_config("p", server.config())
    with pytest.raises(RecipientsDeferred) as info:
        await provider.send(message(addresses(3)))
    assert info.value.code == 452
    assert set(info.value.refused) == set(addresses(3))
    assert server.state.messages == []


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_550_and_450_with_none_accepted_is_transient_with_the_4xx_code(
    smtp_server: Callable[..., SMTPTestServer], pipelining: bool
) -> None:
    server = smtp_server(pipelining=pipelining)
    server.state.fail("RCPT", "550 5.1.1 no such user", match="bad@")
    server.state.fail("RCPT", "450 4.2.1 mailbox busy, try later", match="later@")
    recipients = ["bad@example.org", "later@example.org"]
    provider = SMTPProvider.from_config("p", server.config())
    with pytest.raises(RecipientsDeferred) as info:
        await provider.send(message(recipients))
    error = info.value
    assert isinstance(error, TransientError)
    assert error.code == 450
    assert error.refused == {
        "bad@example.org": "550 5.1.1 no such user",
        "later@example.org": "450 4.2.1 mailbox busy, try later",
    }
    assert server.state.messages == []
    # a transient error: the Mailer fails over (nothing was delivered)
    backup = MemoryProvider("backup")
    mailer = Mailer([SMTPProvider.from_config("smtp", server.config()), backup])
    result = await mailer.send(message(recipients))
    assert result.provider == "backup"
    await mailer.aclose()


async def test_every_recipient_error_carries_refused(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    server.state.fail("RCPT", "550 5.1.1 no such user")
    provider = SMTPProvider.from_config("p", server.config())
    with pytest.raises(RecipientsRefused) as info:
        await provider.send(message(["a@example.org"]))
    assert info.value.refused == {"a@example.org": "550 5.1.1 no such user"}


async def test_pooled_sends_queued_behind_a_split_message_are_not_interleaved(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    """With PIPELINING the pool hands a connection to the next send at the final ".";
    a message that still has recipients to send must keep the connection until its
    last transaction, or another message's MAIL would land in the middle of it."""
    server = smtp_server(pipelining=True)
    server.state.max_recipients = 2
    provider = SMTPProvider.from_config("p", server.config(pool=True, max_connections=1))
    messages = [message(addresses(5, f"m{i}.example.org"), subject=f"m{i}") for i in range(6)]
    with anyio.fail_after(30):
        results: list[object] = [None] * len(messages)

        async def send(i: int) -> None:
            results[i] = await provider.send(messages[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(messages)):
                tg.start_soon(send, i)
    for i, result in enumerate(results):
        assert getattr(result, "accepted", None) == addresses(5, f"m{i}.example.org")
    # every transaction holds the recipients of one message only
    for envelope in server.state.messages:
        domains = {rcpt.split("@")[1] for rcpt in envelope.rcpt_tos}
        assert len(domains) == 1, envelope.rcpt_tos
    assert Counter(delivered(server)) == Counter(a for m in messages for a in m.envelope_recipients)
    assert server.state.connections == 1
    await provider.aclose()
