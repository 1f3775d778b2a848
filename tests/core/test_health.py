"""The circuit breaker, driven by a fake clock through the real Mailer."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mailer import (
    AllProvidersFailed,
    AuthError,
    BreakerState,
    HealthConfig,
    Mailer,
    Message,
    TransientError,
)
from mailer._routing.health import CircuitBreaker
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio

HEALTH = {"failure_threshold": 2, "cooldown": 10, "max_cooldown": 35, "backoff_factor": 2}


def msg() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], text="hi")


def build(clock: Any, primary: ScriptedProvider, backup: ScriptedProvider) -> Mailer:
    return Mailer([primary, backup], clock=clock, health=HEALTH, retry={"attempts": 1})


async def test_opens_after_threshold_rests_probes_and_returns(clock: Any) -> None:
    primary = ScriptedProvider("primary", ["transient"] * 3)
    backup = ScriptedProvider("backup")
    m = build(clock, primary, backup)
    # two consecutive failures open the breaker
    assert (await m.send(msg())).provider == "backup"
    assert m.health()["primary"]["state"] == "closed"
    assert (await m.send(msg())).provider == "backup"
    assert m.health()["primary"]["state"] == "open"
    # while open, the primary is not asked at all
    calls = primary.calls
    for _ in range(5):
        assert (await m.send(msg())).provider == "backup"
    assert primary.calls == calls
    # after the cooldown, one probe; it fails: open again, for longer (10 * 2)
    clock.advance(10)
    assert (await m.send(msg())).provider == "backup"
    assert primary.calls == calls + 1
    assert m.health()["primary"]["state"] == "open"
    assert m.health()["primary"]["retry_in"] == pytest.approx(20)
    clock.advance(19.9)
    await m.send(msg())
    assert primary.calls == calls + 1
    # the next probe succeeds: the primary is used again at once (not sticky)
    clock.advance(0.2)
    assert (await m.send(msg())).provider == "primary"
    assert m.health()["primary"]["state"] == "closed"
    assert (await m.send(msg())).provider == "primary"


def test_cooldown_grows_and_is_capped(clock: Any) -> None:
    b = CircuitBreaker(HealthConfig(**HEALTH), clock)
    err = TransientError("down")
    b.record_failure(err)
    b.record_failure(err)
    rests = []
    for _ in range(4):
        rests.append(b.open_until - clock())
        clock.advance(rests[-1])
        assert b.acquire()  # the probe
        assert b.state is BreakerState.HALF_OPEN
        b.record_failure(err)
    assert rests == [10, 20, 35, 35]


def test_half_open_lets_a_single_probe_through(clock: Any) -> None:
    b = CircuitBreaker(HealthConfig(**HEALTH), clock)
    b.record_failure(AuthError("bad key"))  # opens at once
    assert b.state is BreakerState.OPEN
    assert not b.acquire()
    clock.advance(HealthConfig().auth_cooldown)
    assert b.acquire()
    assert not b.acquire()  # a second sender does not get a probe
    b.release()  # the probe was cancelled: no verdict, the next one may probe
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.acquire() and b.acquire()


async def test_concurrent_sends_during_half_open_probe(clock: Any) -> None:
    primary = ScriptedProvider("primary", ["auth"], latency=0.05)
    backup = ScriptedProvider("backup")
    m = build(clock, primary, backup)
    await m.send(msg())
    clock.advance(HealthConfig().auth_cooldown)
    results: list[str] = []

    async def one() -> None:
        results.append((await m.send(msg())).provider)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
    assert results.count("primary") == 1  # the probe
    assert results.count("backup") == 9
    assert primary.calls == 2


async def test_every_provider_open_tries_the_one_due_soonest(clock: Any) -> None:
    a = ScriptedProvider("a", ["transient"] * 2)
    b = ScriptedProvider("b", ["auth"])
    m = build(clock, a, b)
    for _ in range(2):
        with pytest.raises(AllProvidersFailed):
            await m.send(msg())
    assert {v["state"] for v in m.health().values()} == {"open"}
    calls_a = a.calls
    # a rests 10 s, b rests 300 s (auth): a is due first and is tried, not failed blind
    result = await m.send(msg())
    assert result.provider == "a" and a.calls == calls_a + 1


async def test_permanent_error_counts_as_healthy(clock: Any) -> None:
    primary = ScriptedProvider("primary", ["transient", "permanent", "transient"])
    m = build(clock, primary, ScriptedProvider("backup"))
    await m.send(msg())
    with pytest.raises(Exception, match="permanent"):
        await m.send(msg())
    await m.send(msg())
    assert m.health()["primary"]["state"] == "closed"  # the permanent error reset the count
