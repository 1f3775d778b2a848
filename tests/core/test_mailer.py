"""Mailer routing and failover, against scripted providers and a fake clock."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import anyio
import pytest

from mailer import (
    AllProvidersFailed,
    AuthError,
    DeliveryUncertain,
    Event,
    Mailer,
    Message,
    MessageError,
    PermanentError,
    Provider,
    RateLimited,
    RecipientsRefused,
    Route,
    SendResult,
    TransientError,
)
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio

NO_BACKOFF = {"attempts": 2, "backoff": 0}


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {"sender": "app@example.com", "to": ["u@example.org"], "text": "hi"}
    base.update(kw)
    return Message(**base)


def mailer(*providers: ScriptedProvider | Route, **kw: Any) -> Mailer:
    kw.setdefault("retry", NO_BACKOFF)
    return Mailer(list(providers), **kw)


async def test_priority_order_primary_first() -> None:
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    m = mailer(Route(b, priority=2), Route(a, priority=1))
    for _ in range(5):
        assert (await m.send(msg())).provider == "a"
    assert b.calls == 0


async def test_equal_priority_spread_by_weight() -> None:
    heavy, light = ScriptedProvider("heavy"), ScriptedProvider("light")
    m = mailer(Route(heavy, 1, weight=3), Route(light, 1, weight=1), rng=random.Random(7))
    counts = Counter([(await m.send(msg())).provider for _ in range(800)])
    share = counts["heavy"] / 800
    assert 0.70 < share < 0.80, counts  # expected 0.75


@pytest.mark.parametrize(
    "outcome", ["transient", "rate_limited:30", "auth", TransientError("connection refused")]
)
async def test_fails_over_on_recoverable_errors(outcome: Any) -> None:
    a, b = ScriptedProvider("a", [outcome, outcome]), ScriptedProvider("b")
    result = await mailer(a, b).send(msg())
    assert result.provider == "b"
    assert [x.provider for x in result.attempts][-1] == "b"
    assert result.attempts[0].outcome in ("TransientError", "RateLimited", "AuthError")
    assert len(b.messages) == 1 and not a.messages


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("permanent", PermanentError),
        ("refuse:u@example.org", RecipientsRefused),
        (MessageError("unsupported feature"), MessageError),
    ],
)
async def test_no_failover_on_permanent_errors(outcome: Any, error: type[Exception]) -> None:
    a, b = ScriptedProvider("a", [outcome]), ScriptedProvider("b")
    m = mailer(a, b)
    with pytest.raises(error):
        await m.send(msg())
    assert b.calls == 0
    assert a.calls == 1  # not retried either
    assert m.health()["a"]["state"] == "closed"  # a bad address does not mark it dead


async def test_partial_recipients_is_success_and_not_resent() -> None:
    a, b = ScriptedProvider("a", ["refuse:bad@example.org"]), ScriptedProvider("b")
    result = await mailer(a, b).send(msg(to=["u@example.org", "bad@example.org"]))
    assert result.provider == "a"
    assert result.accepted == ["u@example.org"]
    assert set(result.rejected) == {"bad@example.org"}
    assert b.calls == 0


async def test_uncertain_is_raised_by_default() -> None:
    a, b = ScriptedProvider("a", ["uncertain"]), ScriptedProvider("b")
    with pytest.raises(DeliveryUncertain) as info:
        await mailer(a, b).send(msg())
    assert b.calls == 0 and a.calls == 1  # not retried, not failed over
    assert info.value.provider == "a"
    assert [x.outcome for x in info.value.attempts] == ["DeliveryUncertain"]


async def test_uncertain_fails_over_when_opted_in() -> None:
    a, b = ScriptedProvider("a", ["uncertain"]), ScriptedProvider("b")
    result = await mailer(a, b, on_uncertain="failover").send(msg())
    assert result.provider == "b"


async def test_uncertain_everywhere_reports_possibly_delivered() -> None:
    a, b = ScriptedProvider("a", ["uncertain"]), ScriptedProvider("b", ["transient"] * 2)
    with pytest.raises(AllProvidersFailed) as info:
        await mailer(a, b, on_uncertain="failover").send(msg())
    assert info.value.possibly_delivered
    assert set(info.value.errors) == {"a", "b"}


async def test_idempotent_provider_retried_after_uncertain() -> None:
    class Keyed(ScriptedProvider):
        idempotent = True

    a, b = Keyed("a", ["uncertain"]), ScriptedProvider("b")
    result = await mailer(a, b).send(msg())
    assert result.provider == "a" and a.calls == 2 and b.calls == 0


async def test_transient_retried_on_same_provider_bounded() -> None:
    a = ScriptedProvider("a", ["transient"])
    result = await mailer(a, retry={"attempts": 3, "backoff": 0}).send(msg())
    assert result.provider == "a" and a.calls == 2
    b = ScriptedProvider("b", ["transient"] * 10)
    with pytest.raises(AllProvidersFailed):
        await mailer(b, retry={"attempts": 3, "backoff": 0}).send(msg())
    assert b.calls == 3


async def test_rate_limited_not_retried_on_same_provider() -> None:
    a, b = ScriptedProvider("a", ["rate_limited:5"]), ScriptedProvider("b")
    await mailer(a, b, retry={"attempts": 5, "backoff": 0}).send(msg())
    assert a.calls == 1


async def test_all_failed_keeps_message_and_every_error() -> None:
    a = ScriptedProvider("a", ["auth"])
    b = ScriptedProvider("b", ["transient", "transient"])
    m = msg(subject="keep me")
    with pytest.raises(AllProvidersFailed) as info:
        await mailer(a, b).send(m)
    err = info.value
    assert isinstance(err.errors["a"], AuthError)
    assert isinstance(err.errors["b"], TransientError)
    assert err.message is not None and err.message.message_id == m.message_id
    assert not err.possibly_delivered
    assert "a: AuthError" in str(err) and "b: TransientError" in str(err)


async def test_message_id_same_across_providers() -> None:
    a, b = ScriptedProvider("a", ["transient"] * 2), ScriptedProvider("b")
    m = msg()
    seen: list[str | None] = []
    a.script()
    a._script.clear()
    a.script(lambda x: seen.append(x.message_id) or TransientError("x"))
    a.script(lambda x: seen.append(x.message_id) or TransientError("x"))
    result = await mailer(a, b).send(m)
    assert result.message_id == m.message_id
    assert seen == [m.message_id, m.message_id]
    assert b.messages[0].message_id == m.message_id


async def test_bad_message_raised_before_any_provider_call() -> None:
    a = ScriptedProvider("a")
    with pytest.raises(MessageError, match="no sender"):
        await mailer(a).send(Message(to=["u@example.org"], text="x"))
    assert a.calls == 0


async def test_defaults_fill_sender() -> None:
    a = ScriptedProvider("a")
    m = mailer(a, defaults={"sender": "Default <d@example.com>", "headers": {"X-App": "1"}})
    await m.send(Message(to=["u@example.org"], text="x"))
    sent = a.messages[0]
    assert sent.sender is not None and sent.sender.email == "d@example.com"
    assert sent.headers == {"X-App": "1"}


class _Silent(Provider):
    """A plugin that says nothing about its commit point and takes 5 s a send."""

    async def _send(self, message: Message) -> SendResult:
        await anyio.sleep(5.0)
        return SendResult(provider=self.name)


async def test_send_timeout_bounds_whole_send() -> None:
    m = mailer(_Silent("slow"), send_timeout=0.2, on_uncertain="failover")
    started = time.monotonic()
    with pytest.raises(AllProvidersFailed) as info:
        await m.send(msg())
    assert time.monotonic() - started < 1.5
    # the backstop cannot know what a provider that reports no commit point did:
    # uncertain, never silently resent
    assert isinstance(info.value.errors["slow"], DeliveryUncertain)
    assert info.value.possibly_delivered


async def test_send_timeout_before_the_commit_point_is_transient() -> None:
    slow = ScriptedProvider("slow", latency=5.0)  # still before its commit point
    m = mailer(slow, send_timeout=0.2)
    with pytest.raises(AllProvidersFailed) as info:
        await m.send(msg())
    error = info.value.errors["slow"]
    assert type(error) is TransientError and "send_timeout" in str(error)
    assert not info.value.possibly_delivered


async def test_send_timeout_uncertain_raised_by_default() -> None:
    stalled = ScriptedProvider("stalled", ["stall"])  # took the message, never answers
    backup = ScriptedProvider("backup")
    with pytest.raises(DeliveryUncertain, match="send_timeout"):
        await mailer(stalled, backup, send_timeout=0.2).send(msg())
    assert backup.calls == 0


async def test_events_for_attempt_failover_result_and_breaker() -> None:
    a, b = ScriptedProvider("a", ["auth"]), ScriptedProvider("b")
    m = mailer(a, b)
    events: list[Event] = []
    unsubscribe = m.subscribe(events.append)
    await m.send(msg())
    kinds = [e.kind for e in events]
    assert kinds == ["start", "attempt", "breaker", "failover", "attempt", "sent"]
    assert events[3].provider == "a" and events[3].next_provider == "b"
    assert events[2].new_state is not None and events[2].new_state.value == "open"
    # one send_id for the call's events; breaker changes belong to no send
    assert {e.send_id for e in events if e.kind != "breaker"} == {events[0].send_id}
    assert events[2].send_id is None
    unsubscribe()
    await m.send(msg())
    assert len(events) == 6


async def test_every_send_ends_with_one_sent_or_failed_event() -> None:
    # A cancelled send (the caller's timeout) before the commit point, and two sends of
    # the same message: each call has its own send_id and exactly one terminal event.
    slow = ScriptedProvider("slow", latency=5.0)
    m = mailer(slow)
    events: list[Event] = []
    m.subscribe(events.append)
    message = msg()
    with pytest.raises(TimeoutError), anyio.fail_after(0.2):
        await m.send(message)
    ends = [e for e in events if e.kind in ("sent", "failed")]
    assert len(ends) == 1 and ends[0].kind == "failed"
    assert isinstance(ends[0].error, TransientError) and "not sent" in str(ends[0].error)
    quick = mailer(ScriptedProvider("q"))
    quick.subscribe(events.append)
    await quick.send(message)
    await quick.send(message)
    ids = [e.send_id for e in events if e.kind == "start"]
    assert len(ids) == 3 and len(set(ids)) == 3


async def test_listener_errors_do_not_break_sends() -> None:
    m = mailer(ScriptedProvider("a"))

    def bad(_: Event) -> None:
        raise RuntimeError("listener bug")

    m.subscribe(bad)
    assert (await m.send(msg())).provider == "a"


async def test_unexpected_provider_exception_is_uncertain() -> None:
    def boom(_: Message) -> None:
        raise KeyError("bug in a plugin")

    a, b = ScriptedProvider("a", [boom]), ScriptedProvider("b")
    with pytest.raises(DeliveryUncertain, match="KeyError"):
        await mailer(a, b).send(msg())
    assert b.calls == 0


async def test_concurrent_sends_each_delivered_once() -> None:
    a = ScriptedProvider("a", ["transient", "ok"], repeat=True)
    b = ScriptedProvider("b")
    m = mailer(a, b, retry={"attempts": 1}, health={"failure_threshold": 1000})
    messages = [msg(subject=f"n{i}") for i in range(200)]

    async def one(x: Message) -> None:
        await m.send(x)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for x in messages:
                tg.start_soon(one, x)
    delivered = Counter(x.message_id for x in a.messages + b.messages)
    assert set(delivered) == {x.message_id for x in messages}
    assert max(delivered.values()) == 1


async def test_verify_and_aclose() -> None:
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    async with mailer(a, b) as m:
        assert await m.verify() == {"a": None, "b": None}
    assert a.closed and b.closed


async def test_rate_limited_provider_rests_for_retry_after(clock: Any) -> None:
    a, b = ScriptedProvider("a", [RateLimited("slow down", retry_after=30)]), ScriptedProvider("b")
    m = mailer(a, b, clock=clock)
    assert (await m.send(msg())).provider == "b"
    clock.advance(29)
    assert (await m.send(msg())).provider == "b"
    assert a.calls == 1  # not asked again before Retry-After has passed
    clock.advance(2)
    assert (await m.send(msg())).provider == "a"
