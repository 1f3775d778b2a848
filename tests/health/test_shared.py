"""The shared health store against a real Redis, several Mailers standing in for processes.

Each Mailer has its own Runtime, breakers and Redis connections, exactly as a process
has; the multi-process tests (test_processes.py) run the Done-when scenarios with real
worker processes. Times are real (Redis's clock cannot be faked), so cooldowns are short
and every wait is a bounded poll.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from tests.health.redis_kit import RedisServer

from mailer import HealthConfig, Mailer, Message
from mailer._errors import ConfigError
from mailer.testing import ScriptedProvider, eventually

pytestmark = pytest.mark.anyio


def msg() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], text="hi")


def build(url: str, prefix: str, primary: ScriptedProvider, *, clock: Any = None,
          budget: float = 0.3, **health: Any) -> Mailer:  # fmt: skip
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return Mailer(
        [primary, ScriptedProvider("backup")],
        health={"store": url, "prefix": prefix, "failure_threshold": 2, "cooldown": 30,
                "refresh": 0.1, **health},
        retry={"attempts": 1},
        budget={"pre_commit": budget, "max": max(budget, 1.0)},
        **options,
    )  # fmt: skip


def state(m: Mailer, name: str = "primary") -> str:
    return str(m.health()[name]["state"])


async def test_failures_from_two_processes_open_one_shared_breaker(
    redis_server: RedisServer, prefix: str
) -> None:
    pa, pb = ScriptedProvider("primary", ["transient"]), ScriptedProvider("primary", ["transient"])
    async with build(redis_server.url, prefix, pa) as a, build(redis_server.url, prefix, pb) as b:
        assert (await a.send(msg())).provider == "backup"
        assert state(a) == "closed"  # one failure of two
        assert (await b.send(msg())).provider == "backup"  # the second: opens for both
        assert await eventually(lambda: state(a) == "open")
        assert state(b) == "open"
        calls = pa.calls
        assert (await a.send(msg())).provider == "backup"
        assert pa.calls == calls  # A never learned this itself: it was told
        assert 28 < a.health()["primary"]["retry_in"] <= 30


async def test_one_probe_across_processes_then_everyone_returns(
    redis_server: RedisServer, prefix: str
) -> None:
    # the probe takes 0.3 s, so every other send arrives while it runs
    primaries = [ScriptedProvider("primary", latency=0.3) for _ in range(4)]
    primaries[0].script("hang")
    mailers = [build(redis_server.url, prefix, p, cooldown=0.6, budget=0.8) for p in primaries]
    try:
        # A hang seen by one opens the breaker for all (a slow call opens at once).
        assert (await mailers[0].send(msg())).provider == "backup"
        assert await eventually(lambda: all(state(m) == "open" for m in mailers))
        before = sum(p.calls for p in primaries)
        await anyio.sleep(0.7)  # the cooldown passed: every process would like to probe
        results: list[str] = []

        async def send(m: Mailer) -> None:
            results.append((await m.send(msg())).provider)

        async with anyio.create_task_group() as tg:
            for m in mailers:
                for _ in range(3):
                    tg.start_soon(send, m)
        probes = sum(p.calls for p in primaries) - before
        assert probes == 1, f"{probes} probes across 4 processes"
        assert results.count("primary") == 1
        # the probe succeeded: every process is told and returns to the primary
        assert await eventually(lambda: all(state(m) == "closed" for m in mailers))
        for m in mailers:
            assert (await m.send(msg())).provider == "primary"
    finally:
        for m in mailers:
            await m.aclose()


async def test_a_probe_owner_that_dies_does_not_wedge_the_provider(
    redis_server: RedisServer, prefix: str
) -> None:
    pa, pb = ScriptedProvider("primary", ["hang"]), ScriptedProvider("primary")
    # A's budget is longer than the lease would be, so A holds the lease and "dies" (we
    # cancel it and never let it report): B must be able to probe once the lease expires
    # Redis calls get 2 s: at the default 0.25 s a starved loop timed A's claim out (the
    # process then decides alone, and the claim is None); the lease, 1.5 s, outlasts the
    # steps that need it held
    a = build(redis_server.url, prefix, pa, cooldown=0.3, store_timeout=2.0)
    b = build(redis_server.url, prefix, pb, cooldown=0.3, store_timeout=2.0)
    a._runtime.shared.lease = 1.5  # type: ignore[union-attr]
    try:
        assert (await b.send(msg())).provider == "primary"
        pb.script("hang")
        assert (await b.send(msg())).provider == "backup"  # opens for both
        await anyio.sleep(0.4)
        pa.script("hang")
        shared = a._runtime.shared
        assert shared is not None
        assert await shared.claim("primary") is True  # A holds the probe ...
        shared.leases.clear()  # ... and dies without a word (no release, no verdict)
        shared._closed = True
        await shared.aclose()
        assert (await b.send(msg())).provider == "backup"  # B may not probe yet
        await anyio.sleep(1.6)  # the lease expired
        pb.script("ok")
        # B's copy learns that the lease expired from its next read of the store (every
        # `refresh`): wait for that, not a fixed time (a starved loop reads late)
        breaker = b._runtime.leaves["primary"].breaker
        assert await eventually(breaker.available, 5.0)
        assert (await b.send(msg())).provider == "primary"
    finally:
        await a.aclose()
        await b.aclose()


async def test_retry_after_from_one_process_rests_the_provider_for_all(
    redis_server: RedisServer, prefix: str
) -> None:
    pa, pb = ScriptedProvider("primary", ["rate_limited:30"]), ScriptedProvider("primary")
    async with build(redis_server.url, prefix, pa) as a, build(redis_server.url, prefix, pb) as b:
        assert (await b.send(msg())).provider == "primary"
        assert (await a.send(msg())).provider == "backup"
        assert await eventually(lambda: state(b) == "open")
        assert 28 < b.health()["primary"]["retry_in"] <= 30
        calls = pb.calls
        for _ in range(5):
            assert (await b.send(msg())).provider == "backup"
        assert pb.calls == calls


async def test_a_hang_elsewhere_releases_this_process_waiting_sends(
    redis_server: RedisServer, prefix: str
) -> None:
    pa, pb = ScriptedProvider("primary", ["hang"]), ScriptedProvider("primary", ["hang"])
    a = build(redis_server.url, prefix, pa, budget=0.3)
    b = build(redis_server.url, prefix, pb, budget=5.0)  # B would wait 5 s on its own
    try:
        took: list[float] = []

        async def b_send() -> None:
            started = time.monotonic()
            assert (await b.send(msg())).provider == "backup"
            took.append(time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(b_send)
            await anyio.sleep(0.1)  # B is waiting on the hung primary
            assert (await a.send(msg())).provider == "backup"  # A's slow call opens it
        assert took and took[0] < 2.5, took  # released when A's verdict arrived, not at 5 s
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_process_whose_clock_is_30s_off_neither_opens_nor_closes_early(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    skew = 30.0
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + skew)  # the wall clock too

    def skewed() -> float:
        return time.monotonic() + skew

    pa, pb = ScriptedProvider("primary", ["rate_limited:1.5"]), ScriptedProvider("primary")
    a = build(redis_server.url, prefix, pa)
    b = build(redis_server.url, prefix, pb, clock=skewed)
    try:
        assert (await b.send(msg())).provider == "primary"
        assert (await a.send(msg())).provider == "backup"  # A: rest 1.5 s, by Redis's clock
        opened = time.monotonic()
        assert await eventually(lambda: state(b) == "open")
        assert 1.2 < b.health()["primary"]["retry_in"] <= 1.5
        # B, 30 s ahead, does not think the rest is long over
        while time.monotonic() - opened < 1.2:
            calls = pb.calls
            assert (await b.send(msg())).provider == "backup"
            assert pb.calls == calls
            await anyio.sleep(0.1)
        await anyio.sleep(max(1.6 - (time.monotonic() - opened), 0))
        assert (await b.send(msg())).provider == "primary"  # and not much later either
        # the other way round: the skewed process opens, the other rests just as long
        pb.script("rate_limited:1.5")
        assert (await b.send(msg())).provider == "backup"
        assert await eventually(lambda: a.health()["primary"]["retry_in"] > 1.0)
        assert state(a) == "open"
        assert 1.2 < a.health()["primary"]["retry_in"] <= 1.5
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_down_is_a_degraded_mode_logged_once(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailer")
    primary = ScriptedProvider("primary")
    a = build(own_redis.url, prefix, primary, store_timeout=0.2)
    try:
        assert (await a.send(msg())).provider == "primary"
        shared = a._runtime.shared
        assert shared is not None and shared.connected
        own_redis.stop()
        # every send goes through while Redis is away, with the local breaker deciding
        for _ in range(20):
            assert (await a.send(msg())).provider == "primary"
            await anyio.sleep(0.02)
        primary.script("hang")
        assert (await a.send(msg())).provider == "backup"
        assert state(a) == "open"  # opened locally
        for _ in range(5):
            assert (await a.send(msg())).provider == "backup"
        own_redis.start()
        assert await eventually(lambda: shared.connected, 5.0)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("unreachable" in w for w in warnings) == 1, warnings
        assert sum("reachable again" in w for w in warnings) == 1, warnings
        # the rest decided alone was pushed: a process that starts now sees it
        async with build(own_redis.url, prefix, ScriptedProvider("primary")) as b:
            assert (await b.send(msg())).provider == "backup"
            assert state(b) == "open"
    finally:
        await a.aclose()


async def test_redis_unreachable_from_the_start(prefix: str) -> None:
    from mailer.testing import closed_port

    url = f"redis://127.0.0.1:{closed_port()}/0"
    async with build(url, prefix, ScriptedProvider("primary"), store_timeout=0.2) as a:
        started = time.monotonic()
        assert (await a.send(msg())).provider == "primary"
        assert time.monotonic() - started < 1.0


async def test_shared_rate_limit_across_mailers(redis_server: RedisServer, prefix: str) -> None:
    limit = {"messages": 20, "per": 1.0, "burst": 1}
    mailers = [
        Mailer(
            [ScriptedProvider("primary", rate_limit=limit), ScriptedProvider("backup")],
            health={"store": redis_server.url, "prefix": prefix},
            budget={"pre_commit": 2.0},
        )
        for _ in range(2)
    ]
    try:
        sent: list[str] = []

        async def loop(m: Mailer) -> None:
            for _ in range(10):
                sent.append((await m.send(msg())).provider)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for m in mailers:
                tg.start_soon(loop, m)
        took = time.monotonic() - started
        assert sent.count("primary") == 20
        assert took >= 0.9  # 20 slots 50 ms apart, shared: not 2 x 20 per second
    finally:
        for m in mailers:
            await m.aclose()


def test_store_setting_is_checked_and_its_password_never_shown() -> None:
    cfg = HealthConfig(store="redis://:hunter2@cache.internal:6379/1", prefix="app")
    assert "hunter2" not in repr(cfg)
    assert "cache.internal" in repr(cfg)
    for bad in ("redis", "http://x", "redis://host:notaport/0", "memcached://x"):
        with pytest.raises(ValueError):
            HealthConfig(store=bad)
    with pytest.raises(ConfigError) as info:
        Mailer.from_config({"providers": [{"type": "memory"}], "health": {"store": "redis:x"}})
    assert "health.store" in str(info.value) or "store" in str(info.value)


def test_sync_mailers_share_one_breaker_through_redis(
    redis_server: RedisServer, prefix: str
) -> None:
    """The Django and Flask integrations use SyncMailer, whose Mailer lives on its own
    loop thread: the store must start there and share verdicts like an async Mailer."""
    from mailer import SyncMailer

    pa = ScriptedProvider("primary", ["transient"])
    pb = ScriptedProvider("primary", ["transient"])
    a = SyncMailer(lambda: build(redis_server.url, prefix, pa))
    b = SyncMailer(lambda: build(redis_server.url, prefix, pb))
    try:
        assert a.send(msg()).provider == "backup"
        assert b.send(msg()).provider == "backup"  # the second failure: opens for both
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and a.health()["primary"]["state"] != "open":
            time.sleep(0.02)
        assert a.health()["primary"]["state"] == "open"
        calls = pa.calls
        assert a.send(msg()).provider == "backup"
        assert pa.calls == calls  # told by B's failure, through Redis
    finally:
        a.close()
        b.close()
