"""The durable outbox on SQLite, end to end with real SMTP servers on 127.0.0.1.

The servers keep a ledger by Message-ID, so "delivered exactly once" is what the servers
saw, not what the library says.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mailer import (
    ConfigError,
    DeliveryUncertain,
    Mailer,
    Message,
    MessageError,
    Provider,
    RateLimited,
    SendResult,
)
from mailer._config import load_config
from mailer._outbox import OutboxConfig
from mailer._outbox.store import NewMessage, Outcome
from mailer._outbox.worker import open_store
from mailer.testing import ScriptedProvider, SMTPTestServer, closed_port, eventually

from .conftest import add_messages, execute, fast_outbox, make_message, reset, rows, smtp_entry

pytestmark = pytest.mark.anyio


def two_smtp(db_url: str, ports: tuple[int, int], **options: Any) -> Mailer:
    return Mailer.from_config(
        {
            "providers": [smtp_entry("primary", ports[0], 1), smtp_entry("backup", ports[1], 2)],
            "retry": {"attempts": 1},
            "health": {"cooldown": 0.2, "max_cooldown": 0.5},
            # leases of 5 s, not fast_outbox's 1 s: these tests expire no lease, and a loaded
            # machine stalling a worker past 1 s would make a delivered message `unknown`
            "outbox": fast_outbox(db_url, lease=5.0),
            **options,
        }
    )


async def test_all_down_then_back_500_enqueued_and_500_queued_by_send(
    smtp: Callable[..., SMTPTestServer], db_url: str
) -> None:
    """Both providers down: 500 messages enqueued, 500 more sent with on_all_failed =
    "enqueue" (queued, not raised); the providers come back; each of the 1,000 is
    delivered exactly once, as the servers count them."""
    ports = (closed_port(), closed_port())  # refused until smtp(port=) serves them
    async with two_smtp(db_url, ports, on_all_failed="enqueue") as mailer:
        enqueued = [await mailer.enqueue(make_message(i)) for i in range(500)]
        queued = []
        for i in range(500, 1000):
            result = await mailer.send(make_message(i))
            assert result.status == "queued" and result.provider == "outbox"
            assert result.attempts and all(not a.ok for a in result.attempts)
            queued.append(result.message_id)
        stats = await mailer.outbox.stats()
        assert stats["queued"] == 1000 and stats["sent"] == 0
        # a drain while they are still down delivers nothing and loses nothing
        await mailer.drain(timeout=1.0)
        assert (await mailer.outbox.stats())["queued"] == 1000

        primary, backup = smtp(port=ports[0]), smtp(port=ports[1])
        done = await mailer.drain(timeout=60)
        stats = await mailer.outbox.stats()
    assert stats["sent"] == 1000, (stats, done)
    assert stats["queued"] == stats["sending"] == stats["unknown"] == stats["dead"] == 0
    ledger = primary.received() + backup.received()
    assert set(ledger) == set(enqueued) | set(queued)
    assert set(ledger.values()) == {1}, "a message was delivered twice"


async def test_drain_while_providers_recover_delivers_each_once(
    smtp: Callable[..., SMTPTestServer], db_url: str
) -> None:
    """Retries with backoff while the servers refuse (421 at the greeting, 451 at MAIL),
    then the servers heal mid-drain: each message delivered once."""
    primary, backup = smtp(), smtp()
    primary.state.fail("MAIL", "451 4.3.0 try again later")
    backup.state.fail("MAIL", "421 4.3.2 too busy")
    async with two_smtp(db_url, (primary.port, backup.port)) as mailer:
        ids = [await mailer.enqueue(make_message(i)) for i in range(200)]

        async def heal() -> None:
            # Heal once the backup has refused a few: each of those messages was refused
            # by both, so its row waits for another try (the retry the test is about).
            # A fixed 0.5 s could pass before the first claim on a loaded machine, and
            # then nothing was retried.
            refused = await eventually(lambda: backup.state.verbs().count("MAIL") >= 3, 30)
            assert refused, backup.state.commands
            for server in (primary, backup):
                with server.state.lock:
                    server.state.faults.clear()

        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            await mailer.drain(timeout=60)
        stats = await mailer.outbox.stats()
    assert stats["sent"] == 200, stats
    ledger = primary.received() + backup.received()
    assert set(ledger) == set(ids) and set(ledger.values()) == {1}
    assert max(r["attempts"] for r in rows(db_url)) > 1  # they really were retried


async def test_uncertain_is_never_queued(db_url: str) -> None:
    """DeliveryUncertain (may have been delivered) is raised, not stored."""
    provider = ScriptedProvider("p", ["uncertain"])
    async with Mailer([provider], outbox=fast_outbox(db_url), on_all_failed="enqueue") as mailer:
        with pytest.raises(DeliveryUncertain):
            await mailer.send(make_message(1))
        assert (await mailer.outbox.stats())["queued"] == 0


class Keyed(ScriptedProvider):
    """An idempotent provider (as Resend, with its key) whose keys last an hour."""

    idempotent = True
    idempotency_window = 3600.0


async def test_an_uncertain_idempotent_send_is_retried_on_that_provider_only(
    db_url: str,
) -> None:
    """Resend may have accepted it: the re-send must reuse Resend's key, so the message is
    pinned to that provider. Without the pin the next try went to the backup (Resend's
    breaker had opened) and the message could be delivered twice."""
    keyed = Keyed("keyed", ["uncertain", "uncertain"])  # both of the Mailer's own tries
    backup = ScriptedProvider("backup")
    options: dict[str, Any] = {
        "retry": {"attempts": 2, "backoff": 0},
        "health": {"failure_threshold": 1, "cooldown": 0.3},
    }
    async with Mailer([keyed, backup], outbox=fast_outbox(db_url), **options) as mailer:
        await mailer.enqueue(make_message(1))
        outcomes = await mailer.drain(timeout=10)
    (row,) = rows(db_url)
    assert row["state"] == "sent" and row["provider"] == "keyed", row
    assert row["pin"] is None  # cleared once the outcome is known
    assert backup.calls == 0
    assert keyed.calls >= 3 and outcomes["sent"] == 1

    reset(db_url)
    # the key would expire before the next try (the provider keeps failing before its
    # commit point, so the pinned retries go on): unknown, for an operator, never
    # another provider
    short = Keyed("keyed", ["uncertain", "uncertain"] + ["transient"] * 1000)
    short.idempotency_window = 0.5
    async with Mailer([short, backup], outbox=fast_outbox(db_url), **options) as mailer:
        await mailer.enqueue(make_message(2))
        await mailer.drain(timeout=3)
    (row,) = rows(db_url)
    assert row["state"] == "unknown" and "idempotency window" in row["last_error"], row
    assert backup.calls == 0


def test_decide_pins_only_what_an_idempotency_key_protects() -> None:
    """The rules, one by one (pure function)."""
    from random import Random

    from mailer import AllProvidersFailed, TransientError
    from mailer._outbox.worker import decide

    config = OutboxConfig(url="sqlite:///unused.db", max_attempts=5)
    windows = {"resend": 86400.0, "resend2": 86400.0}

    def outcome(
        exc: BaseException,
        *,
        crossed: bool = True,
        pin: str | None = None,
        attempts: int = 1,
        created: float = 0.0,
    ) -> Outcome:
        return decide(
            exc,
            crossed=crossed,
            attempts=attempts,
            created=created,
            config=config,
            window=lambda n: windows.get(n or "", 0.0),
            rng=Random(1),
            now=10.0,
            pin=pin,
        )

    def uncertain(name: str) -> DeliveryUncertain:
        return DeliveryUncertain("timed out after the body", provider=name)

    first = outcome(uncertain("resend"))
    assert (first.state, first.pin) == ("queued", "resend")
    assert outcome(uncertain("smtp")).state == "unknown"  # no key: may be a duplicate
    # pinned: a failure before any commit point keeps the pin (the first try may count)
    again = outcome(TransientError("refused", provider="resend"), crossed=False, pin="resend")
    assert (again.state, again.pin) == ("queued", "resend")
    both = AllProvidersFailed({"resend": uncertain("resend"), "resend2": uncertain("resend2")})
    assert outcome(both).state == "unknown"  # two keys, two possible deliveries
    assert outcome(uncertain("resend2"), pin="resend").state == "unknown"
    assert outcome(uncertain("resend"), pin="resend", attempts=5).state == "unknown"
    assert outcome(ConfigError("no provider 'resend'"), crossed=False, pin="resend").state == (
        "unknown"
    )
    late = outcome(uncertain("resend"), created=10.0 - 86400.0)
    assert late.state == "unknown" and "idempotency window" in (late.error or "")
    # unpinned, nothing crossed: an ordinary retry, on any provider
    plain = outcome(TransientError("451", provider="smtp"), crossed=False)
    assert (plain.state, plain.pin) == ("queued", None)


async def test_outcomes_permanent_max_attempts_max_age_rate_limit(db_url: str) -> None:
    permanent = ScriptedProvider("p", ["permanent"])
    async with Mailer([permanent], outbox=fast_outbox(db_url)) as mailer:
        await mailer.enqueue(make_message(1))
        assert await mailer.drain(timeout=10) == {"failed": 1}
        (row,) = rows(db_url)
        assert row["state"] == "failed" and "PermanentError" in row["last_error"]

    reset(db_url)
    down = ScriptedProvider("p", ["transient"] * 100)
    async with Mailer(
        [down],
        outbox=fast_outbox(db_url, max_attempts=3),
        retry={"attempts": 1},
        health={"failure_threshold": 1000},
    ) as mailer:
        await mailer.enqueue(make_message(2))
        outcomes = await mailer.drain(timeout=10)
        assert outcomes == {"queued": 2, "dead": 1}
        (row,) = rows(db_url)
        assert row["state"] == "dead" and row["attempts"] == 3
        assert "max_attempts" in row["last_error"]

    reset(db_url)
    # max_age: the next retry would come after the message's age limit
    aged = fast_outbox(db_url, max_age=0.3, backoff={"initial": 0.1, "jitter": 0})
    async with Mailer(
        [ScriptedProvider("p", ["transient"] * 100)], retry={"attempts": 1}, outbox=aged
    ) as mailer:
        await mailer.enqueue(make_message(3))
        outcomes = await mailer.drain(timeout=10)
        (row,) = rows(db_url)
        assert row["state"] == "dead" and "max_age" in row["last_error"], row
        assert 1 <= row["attempts"] <= 3 and outcomes["dead"] == 1

    reset(db_url)
    # a rate limit's Retry-After is honoured over a shorter backoff
    limited = ScriptedProvider("p", [RateLimited("slow down", retry_after=60)])
    async with Mailer([limited], outbox=fast_outbox(db_url)) as mailer:
        await mailer.enqueue(make_message(4))
        assert await mailer.drain(timeout=10) == {"queued": 1}
        (row,) = rows(db_url)
        assert row["next_at"] - time.time() > 50


async def test_backoff_grows_with_jitter(db_url: str) -> None:
    from random import Random

    from mailer._outbox.config import BackoffConfig
    from mailer._outbox.worker import backoff_delay

    cfg = BackoffConfig()  # the defaults: first retry within 30 s
    rng = Random(7)
    firsts = [backoff_delay(1, cfg, rng) for _ in range(500)]
    assert min(firsts) >= 7.5 and max(firsts) <= 22.5 and max(firsts) - min(firsts) > 10
    assert all(15 <= backoff_delay(2, cfg, rng) <= 45 for _ in range(100))
    assert all(backoff_delay(30, cfg, rng) <= 3600 * 1.5 for _ in range(100))


async def test_commit_point_is_recorded_before_it_is_crossed(
    smtp: Callable[..., SMTPTestServer], db_url: str
) -> None:
    """SMTP records the crossing before the payload; a provider that reports no commit
    point records it before it starts. Seen from inside the send, in the database."""
    seen: list[tuple[str, int]] = []

    def look(message: Message) -> None:
        (row,) = rows(db_url)
        seen.append((row["state"], row["committed"]))

    class Opaque(Provider):
        """Reports no commit point: committed from its first instruction."""

        async def _send(self, message: Message) -> SendResult:
            look(message)
            return SendResult(provider=self.name, message_id=message.message_id)

    async with Mailer([Opaque("opaque")], outbox=fast_outbox(db_url)) as m:
        await m.enqueue(make_message(1))
        assert await m.drain(timeout=10) == {"sent": 1}
    assert seen == [("sending", 1)]
    (row,) = rows(db_url)
    assert row["state"] == "sent" and row["provider"] == "opaque" and row["committed"]

    # the memory provider reports its commit point: before it, nothing is recorded yet
    # when the record is made per attempt; with the claim's own record, from the claim on
    for record, before in (("attempt", 0), ("claim", 1)):
        reset(db_url)
        seen.clear()
        box = fast_outbox(db_url, commit_record=record)
        async with Mailer([ScriptedProvider("memory", [look])], outbox=box) as m:
            await m.enqueue(make_message(1))
            assert await m.drain(timeout=10) == {"sent": 1}
        assert seen == [("sending", before)], record
        (row,) = rows(db_url)
        assert row["state"] == "sent" and row["committed"] and row["provider"] == "memory"

    # SMTP: refused at RCPT (before its commit point): committed stays 0 and it is retried
    reset(db_url)
    server = smtp()
    server.state.fail("RCPT", "451 4.3.0 later", times=1)
    async with Mailer.from_config(
        {
            "providers": [smtp_entry("s", server.port, 1)],
            "retry": {"attempts": 1},
            "outbox": fast_outbox(db_url),
        }
    ) as m:
        mid = await m.enqueue(make_message(2))
        store = m.outbox.store
        (claim,) = await store.claim("test", 1, lease=30, max_age=3600)
        from mailer._attempt import commit_hooks

        marks: list[tuple[str, int]] = []

        async def hook() -> None:
            (row,) = rows(db_url)
            marks.append((row["state"], row["committed"]))
            assert await store.mark_committing(claim.row, claim.claim, "s")

        msg = Message.model_validate_json(claim.message_json)
        with commit_hooks(hook), pytest.raises(Exception):  # noqa: B017
            await m.send(msg)
        assert marks == []  # refused before the commit point: the hook never ran
        with commit_hooks(hook):
            await m.send(msg)
        assert marks == [("sending", 0)]
        assert server.received() == {mid: 1}


async def test_a_pin_is_stored_claimed_listed_and_cleared_by_retry(db_url: str) -> None:
    """The store's side of pinning: finish() keeps the pin, the next claim carries it,
    items() (what `mailer outbox list` prints) shows it, an operator's retry clears it."""
    store = open_store(OutboxConfig(url=db_url))
    await store.open()
    try:
        m = make_message(1)
        assert m.message_id
        await store.add(
            NewMessage(m.message_id, m.model_dump_json().encode(), m.as_bytes(), time.time())
        )
        (first,) = await store.claim("w", 10, lease=30, max_age=3600)
        assert first.pin is None
        queued = Outcome("queued", next_at=time.time(), provider="resend", pin="resend")
        assert await store.finish(first.row, first.claim, queued)
        (item,) = await store.items()
        assert (item.state, item.pin) == ("queued", "resend")
        (second,) = await store.claim("w", 10, lease=30, max_age=3600)
        assert second.pin == "resend"
        assert await store.finish(second.row, second.claim, Outcome("unknown", error="x"))
        assert await store.retry([m.message_id]) == 1
        (item,) = await store.items()
        assert (item.state, item.pin) == ("queued", None)
    finally:
        await store.close()


async def test_expired_leases_settle_by_the_commit_flag(db_url: str) -> None:
    """A dead worker's claims: back to queued if it never recorded a commit point, to
    unknown if it did; a late worker whose claim was taken cannot cross. The lease is long
    and expired by writing its end into the past, so no stall of a loaded machine can end
    it early (before the commit point) or late."""
    store = open_store(OutboxConfig(url=db_url))
    await store.open()
    try:
        await add_messages(store, 2)
        a, b = await store.claim("dead-worker", 10, lease=3600, max_age=3600)
        assert await store.mark_committing(b.row, b.claim, "smtp")
        assert await store.claim("other", 10, lease=30, max_age=3600) == []  # leased
        execute(db_url, "UPDATE outbox SET lease_until = 0 WHERE state = 'sending'")  # expired
        # a claim settles expired leases at most every 0.1 s (_SETTLE_EVERY): wait past it
        # (a stall only makes the wait longer)
        await anyio.sleep(0.3)
        again = await store.claim("other", 10, lease=30, max_age=3600)
        assert [c.message_id for c in again] == [a.message_id]
        assert again[0].attempts == 2
        assert await store.stats() == {
            "queued": 0,
            "sending": 1,
            "sent": 0,
            "failed": 0,
            "unknown": 1,
            "dead": 0,
        }
        # the first worker wakes up late: its claim on `a` is gone, so it must not cross
        assert not await store.mark_committing(a.row, a.claim, "smtp")
        assert not await store.finish(a.row, a.claim, Outcome("sent"))
        # ... but a late worker's real outcome for `b` (now unknown) is still recorded
        assert await store.finish(b.row, b.claim, Outcome("sent", provider="smtp"))
        items = {i.message_id: i for i in await store.items()}
        assert items[b.message_id].state == "sent"
        # an operator's retry of an unknown message
        await store.finish(again[0].row, again[0].claim, Outcome("unknown", error="x"))
        assert await store.retry([a.message_id, "<nope@x>"]) == 1
        assert (await store.stats())["queued"] == 1
        assert await store.purge("sent", older_than=0) == 1
        assert (await store.stats())["sent"] == 0
    finally:
        await store.close()


async def test_max_age_is_checked_as_messages_come_due(db_url: str) -> None:
    """A due message past max_age goes to dead when a claim reaches it (no scan of every
    queued row per claim); the due message behind it is still claimed in the same call,
    and content is purged with its row."""
    store = open_store(OutboxConfig(url=db_url))
    await store.open()
    try:
        ids = []
        for i in range(3):
            m = make_message(i)
            assert m.message_id
            ids.append(m.message_id)
            await store.add(
                NewMessage(
                    m.message_id, m.model_dump_json().encode(), m.as_bytes(), time.time() - 10 + i
                )
            )
        execute(
            db_url, "UPDATE outbox SET created = ? WHERE message_id = ?", time.time() - 7200, ids[0]
        )
        got = await store.claim("w", 1, lease=30, max_age=3600)
        assert [c.message_id for c in got] == [ids[1]] and got[0].raw is not None
        assert (await store.stats())["dead"] == 1
        (old,) = await store.items("dead")
        assert old.message_id == ids[0] and "max_age" in (old.last_error or "")
        assert await store.purge("dead", older_than=0) == 1
        assert [r["message_id"] for r in rows(db_url)] == ids[1:]
        if db_url.startswith("sqlite"):
            with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
                (bodies,) = conn.execute("SELECT COUNT(*) FROM outbox_body").fetchone()
            assert bodies == 2
    finally:
        await store.close()


async def test_two_stores_on_one_file_never_claim_the_same_message(db_url: str) -> None:
    """Two outboxes (separate connections, as two processes have) draining one file.

    What counts is what each provider accepted (past its commit point), not its calls:
    on a loaded machine a claim may answer after its 1 s test lease minus the margin, and
    its sends are then refused at the commit point and claimed again, as designed."""
    # 3 ms a send, so that neither drainer can take all 300 before the other starts,
    # however loaded the machine
    providers = [ScriptedProvider("p", latency=0.003) for _ in range(2)]
    mailers = [Mailer([p], outbox=fast_outbox(db_url)) for p in providers]
    ids = [await mailers[0].enqueue(make_message(i)) for i in range(300)]
    results: list[dict[str, int]] = []

    async def drain(m: Mailer) -> None:
        results.append(await m.drain(timeout=60))

    async with anyio.create_task_group() as tg:
        for m in mailers:
            tg.start_soon(drain, m)
    for m in mailers:
        await m.aclose()
    delivered = [m.message_id for p in providers for m in p.messages]
    assert sorted(delivered) == sorted(ids)  # every one, once
    assert all(r.get("sent", 0) > 0 for r in results), results  # both took part


async def test_enqueue_stores_content_and_sends_the_stored_bytes(
    smtp: Callable[..., SMTPTestServer], db_url: str, tmp_path: Path
) -> None:
    """Path attachments are read at enqueue (the file may vanish); every attempt sends
    the bytes rendered at enqueue, with the same Message-ID."""
    attached = tmp_path / "report.txt"
    attached.write_bytes(b"version 1")
    server = smtp()
    message = Message(
        sender="app@example.com",
        to="u@example.org",
        subject="Report",
        text="see attached",
        attachments=[attached],
    )
    async with Mailer.from_config(
        {"providers": [smtp_entry("s", server.port, 1)], "outbox": fast_outbox(db_url)}
    ) as mailer:
        mid = await mailer.enqueue(message)
        assert mid == message.message_id
        attached.unlink()
        (row,) = rows(db_url)
        assert b"report.txt" in row["message"] and str(tmp_path).encode() not in row["message"]
        assert await mailer.drain(timeout=10) == {"sent": 1}
    assert server.received() == {mid: 1}
    with server.state.lock:
        (envelope,) = server.state.messages
    assert (envelope.original_content or envelope.content).replace(b"\r\n", b"\n") == row[
        "raw"
    ].replace(b"\r\n", b"\n")


async def test_enqueue_refuses_bad_messages_before_storing(db_url: str) -> None:
    async with Mailer([ScriptedProvider("p")], outbox=fast_outbox(db_url)) as mailer:
        with pytest.raises(MessageError, match="sender"):
            await mailer.enqueue(Message(to="u@example.org", text="no sender"))
        assert sum((await mailer.outbox.stats()).values()) == 0
        # the same Message-ID is stored once
        m = make_message(1)
        assert await mailer.enqueue(m) == await mailer.enqueue(m)
        assert (await mailer.outbox.stats())["queued"] == 1


async def test_config_forms_and_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    mailer = Mailer.from_config({"providers": ["memory://"], "outbox": url})
    assert mailer.outbox.config.lease == 30 and mailer.outbox.config.max_attempts == 10
    table = {"url": url, "max_age": "2h", "lease": "10s"}
    mailer = Mailer.from_config({"providers": ["memory://"], "outbox": table})
    assert mailer.outbox.config.max_age == 7200 and mailer.outbox.config.lease == 10
    with pytest.raises(ConfigError, match="no outbox"):
        _ = Mailer.from_config({"providers": ["memory://"]}).outbox
    with pytest.raises(ConfigError, match="needs an outbox"):
        Mailer([ScriptedProvider("p")], on_all_failed="enqueue")
    with pytest.raises(ConfigError, match="sqlite:///"):
        Mailer.from_config({"providers": ["memory://"], "outbox": "mysql://u:pw@h/db"})
    with pytest.raises(ConfigError, match="in-memory"):
        Mailer.from_config({"providers": ["memory://"], "outbox": "sqlite:///:memory:"})
    bad = {"url": "postgresql://u:hunter22@db/x", "lease": "soon"}
    with pytest.raises(ConfigError) as info:
        Mailer.from_config({"providers": ["memory://"], "outbox": bad})
    assert "hunter22" not in str(info.value) and "lease" in str(info.value)
    config = load_config({"providers": ["memory://"], "outbox": "postgresql://u:hunter22@db/x"})
    assert "hunter22" not in repr(config)
    for level in ("auto", "FULL", "extra", "normal"):
        store = open_store(OutboxConfig(url=f"{url}?synchronous={level}"))
        assert getattr(store, "synchronous", None) == level.lower()
    assert getattr(open_store(OutboxConfig(url=url)), "synchronous", None) == "auto"
    with pytest.raises(ConfigError, match="synchronous must be auto, full, extra or normal"):
        Mailer.from_config({"providers": ["memory://"], "outbox": f"{url}?synchronous=off"})


async def test_inline_dkim_keys_are_refused_at_enqueue(db_url: str) -> None:
    """The store never holds a secret, so a message carrying its own DKIM key could not
    be signed when loaded again: refused before it is stored, with the way out."""
    import base64

    from mailer import MessageError

    pytest.importorskip("dkim")
    pytest.importorskip("nacl")
    seed = base64.b64encode(bytes(range(32))).decode()
    message = Message(
        sender="app@example.com",
        to=["u@example.org"],
        text="x",
        dkim={
            "domain": "example.com",
            "selector": "s1",
            "private_key": seed,
            "algorithm": "ed25519-sha256",
        },
    )
    mailer = Mailer([ScriptedProvider("p")], outbox=fast_outbox(db_url))
    with pytest.raises(MessageError, match="private_key_file"):
        await mailer.enqueue(message)
    assert (await mailer.outbox.stats())["queued"] == 0
    await mailer.aclose()
