"""One suppression list for every provider, checked before any I/O, with real SMTP
servers on 127.0.0.1: what a server did not see, it was not sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import Mailer, Message, PermanentError, RecipientsSuppressed, SyncMailer
from mailer._events import SuppressionConfig
from mailer.testing import SMTPTestServer

from .conftest import event, smtp_entry

pytestmark = pytest.mark.anyio


def two_smtp(a: SMTPTestServer, b: SMTPTestServer, **options: Any) -> Mailer:
    return Mailer.from_config(
        {
            "providers": [smtp_entry("primary", a.port, 1), smtp_entry("backup", b.port, 2)],
            "defaults": {"sender": "app@example.com"},
            "retry": {"attempts": 1},
            **options,
        }
    )


def message(*to: str) -> Message:
    return Message(to=list(to), subject="hello", text="body")


@pytest.mark.parametrize("kind", ["bounced:hard", "complained", "unsubscribed"])
async def test_event_at_a_stops_the_next_send_through_b_before_any_io(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path, kind: str
) -> None:
    a, b = smtp(), smtp()
    type_, _, bounce = kind.partition(":")
    async with two_smtp(a, b, suppression=f"sqlite:///{tmp_path / 'mail.db'}") as mailer:
        report = await mailer.ingest_events(
            [
                event(
                    type_,
                    bounce=bounce or None,
                    provider="primary",
                    recipient="Gone@EXAMPLE.org",
                    event_id="e1",
                    reason="550 no such user",
                )
            ]
        )
        assert report.suppressed == ("Gone@example.org",)
        with pytest.raises(RecipientsSuppressed) as caught:
            await mailer.send(message("Gone@example.org"), providers=["backup"])
        error = caught.value
        assert isinstance(error, PermanentError)
        assert error.suppressed == {"Gone@example.org": f"{kind}: 550 no such user"}
        assert b.state.connections == 0 and a.state.connections == 0  # no I/O at all
        assert error.attempts == []  # no provider tried
        assert mailer.health()["backup"]["state"] == "closed"  # no breaker touched
        entry = await mailer.suppression.get("gone@example.org".replace("gone", "Gone"))
        assert entry is not None and entry.provider == "primary"


async def test_soft_bounce_and_other_events_do_not_suppress(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    a, b = smtp(), smtp()
    async with two_smtp(a, b) as mailer:
        report = await mailer.ingest_events(
            [
                event("bounced", bounce="soft", event_id="1"),
                event("deferred", event_id="2"),
                event("delivered", event_id="3"),
                event("opened", event_id="4"),
            ]
        )
        assert report.new == 4 and report.suppressed == ()
        result = await mailer.send(message("user@example.org"), providers=["backup"])
        assert result.suppressed == {}
        assert list(b.recipients().values()) == [["user@example.org"]]


async def test_some_suppressed_the_others_are_sent(smtp: Callable[..., SMTPTestServer]) -> None:
    a, b = smtp(), smtp()
    async with two_smtp(a, b) as mailer:
        await mailer.suppression.add("gone@example.org", "manual: left the company")
        msg = Message(
            to=["gone@example.org", "here@example.org"],
            cc=["cc@example.org"],
            bcc=["gone@example.org"],
            subject="hi",
            text="body",
        )
        result = await mailer.send(msg)
        assert result.suppressed == {"gone@example.org": "manual: left the company"}
        assert result.message_id == msg.message_id  # the same message, fewer recipients
        ((mid, rcpts),) = a.recipients().items()
        assert rcpts == ["here@example.org", "cc@example.org"] and mid == msg.message_id
        assert b.state.connections == 0


async def test_matching_is_exact_on_the_local_part(smtp: Callable[..., SMTPTestServer]) -> None:
    a, b = smtp(), smtp()
    async with two_smtp(a, b) as mailer:
        await mailer.suppression.add("Jo@BÜCHER.example")
        with pytest.raises(RecipientsSuppressed):
            await mailer.send(message("Jo@xn--bcher-kva.example"))
        with pytest.raises(RecipientsSuppressed):
            await mailer.send(message("Jo@bücher.EXAMPLE"))
        await mailer.send(message("jo@bücher.example"))  # another mailbox (RFC 5321)
        assert a.state.connections == 1


async def test_bypass_is_sent_and_logged(
    smtp: Callable[..., SMTPTestServer], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = smtp(), smtp()
    async with two_smtp(a, b) as mailer:
        await mailer.suppression.add("gone@example.org", "complained")
        with caplog.at_level(logging.WARNING, logger="mailer"):
            result = await mailer.send(message("gone@example.org"), suppression=False)
        assert result.provider == "primary" and result.suppressed == {}
        assert list(a.recipients().values()) == [["gone@example.org"]]
        (record,) = [r for r in caplog.records if "bypassed" in r.getMessage()]
        assert record.__dict__["event"] == "suppression_bypass"
        assert record.__dict__["message_id"] == result.message_id


async def test_remove_takes_effect_at_once(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    a, b = smtp(), smtp()
    async with two_smtp(a, b, suppression=f"sqlite:///{tmp_path / 'm.db'}") as mailer:
        assert await mailer.suppression.add("x@example.org")
        assert not await mailer.suppression.add("x@EXAMPLE.org", "again")  # first entry kept
        with pytest.raises(RecipientsSuppressed):
            await mailer.send(message("x@example.org"))
        assert await mailer.suppression.remove("x@example.org")
        assert not await mailer.suppression.remove("x@example.org")
        await mailer.send(message("x@example.org"))
        assert a.state.connections == 1


async def test_check_off_and_config() -> None:
    from mailer.testing import MemoryProvider

    provider = MemoryProvider("p")
    async with Mailer([provider], suppression={"check": False}) as mailer:
        await mailer.suppression.add("x@example.org")
        await mailer.send(Message(sender="a@example.com", to=["x@example.org"], text="t"))
        assert provider.calls == 1
    config = SuppressionConfig.model_validate("redis://:secret@127.0.0.1:6379/0")
    assert "secret" not in repr(config)
    assert SuppressionConfig().on == ("bounced:hard", "complained", "unsubscribed")
    from mailer import ConfigError

    with pytest.raises(ConfigError, match="unknown kinds") as caught:
        Mailer([provider], suppression={"on": ["bounced:hrad"]})
    with pytest.raises(ConfigError, match="must start with sqlite") as caught:
        Mailer([provider], suppression="mysql://u:hunter22@db/x")
    assert "hunter22" not in str(caught.value)
    with pytest.raises(ConfigError, match="in-memory"):
        Mailer([provider], suppression="sqlite:///:memory:")


async def test_any_bounce_when_configured(tmp_path: Path) -> None:
    from mailer.testing import MemoryProvider

    async with Mailer([MemoryProvider("p")], suppression={"on": ["bounced"]}) as mailer:
        report = await mailer.ingest_events([event("bounced", bounce="soft", event_id="s")])
        assert report.suppressed == ("user@example.org",)


async def test_api_on_every_store(any_url: str | None) -> None:
    from mailer.testing import MemoryProvider

    async with Mailer([MemoryProvider("p")], suppression={"store": any_url}) as mailer:
        s = mailer.suppression
        for i in range(5):
            assert await s.add(f"u{i}@example.org", reason=f"r{i}", provider="p")
        assert not await s.add("u0@example.org")
        entries = await s.list(limit=3, offset=1)
        assert [e.address for e in entries] == [
            "u1@example.org",
            "u2@example.org",
            "u3@example.org",
        ]
        got = await s.get("u4@EXAMPLE.org")
        assert got is not None and (got.reason, got.provider) == ("r4", "p")
        assert await s.get("nobody@example.org") is None
        assert await s.remove("u4@example.org") and await s.get("u4@example.org") is None
        with pytest.raises(ValueError):
            await s.list(limit=0)
        with pytest.raises(ValueError):
            await s.add("not an address")
        with pytest.raises(ValueError):
            await s.add("a@example.org", reason=" ")


def test_sync_mailer_api() -> None:
    from mailer.testing import MemoryProvider

    with SyncMailer(lambda: Mailer([MemoryProvider("p")])) as m:
        assert m.suppression.add("x@example.org", "manual")
        with pytest.raises(RecipientsSuppressed):
            m.send(Message(sender="a@example.com", to=["x@example.org"], text="t"))
        result = m.send(
            Message(sender="a@example.com", to=["x@example.org"], text="t"), suppression=False
        )
        assert result.provider == "p"
        assert [e.address for e in m.suppression.list()] == ["x@example.org"]
        assert m.suppression.remove("x@example.org")


async def test_store_down(own_redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Down after the first load: sends go on with the local copy (logged). Down from the
    start: refused before any I/O as a TransientError, nothing sent."""
    from mailer import TransientError
    from mailer.testing import MemoryProvider

    provider = MemoryProvider("p")
    config = {"store": own_redis.url, "refresh": 0.05}
    msg = Message(sender="a@example.com", to=["ok@example.org"], text="t")
    async with Mailer([provider], suppression=config) as mailer:
        await mailer.suppression.add("gone@example.org")
        await mailer.send(msg)
        own_redis.stop()
        import anyio

        await anyio.sleep(0.15)  # older than twice `refresh`: the send waits for a refresh
        with caplog.at_level(logging.WARNING, logger="mailer"):
            await mailer.send(msg)
            with pytest.raises(RecipientsSuppressed):  # the local copy still holds it
                await mailer.send(
                    Message(sender="a@example.com", to=["gone@example.org"], text="t")
                )
        assert any(r.__dict__.get("event") == "suppression_stale" for r in caplog.records)
        assert provider.calls == 2
    async with Mailer([provider], suppression=config) as mailer:
        with pytest.raises(TransientError, match="cannot be read") as caught:
            await mailer.send(msg)
        assert own_redis.url not in str(caught.value)
        assert provider.calls == 2
