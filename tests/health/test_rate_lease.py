"""Leased rate-limit slots (mailer._routing.ratelimit.Lease): a shared limit without a
Redis round trip per send, still held across 8 real processes within the stated bound
(docs/configuration.md, ``rate_limit.lease``). Real Redis, real SMTP server."""

from __future__ import annotations

import bisect
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.health.processes_kit import failures, health, smtp, workers
from tests.health.redis_kit import RedisServer

from mailer import Mailer, Message
from mailer._provider import RateLimit
from mailer.testing import ScriptedProvider, SMTPTestServer

PROCESSES = 8


def _rate_calls(url: str) -> int:
    """Script calls the server has run so far (every call of the store is one)."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


def _most_in(ends: list[float], seconds: float) -> int:
    """The most sends that ended within any window of ``seconds``."""
    return max(bisect.bisect_left(ends, t + seconds) - i for i, t in enumerate(ends))


def _sends(results: list[dict[str, Any]]) -> list[float]:
    """Every send's end time (all to the primary, none failed), in order."""
    assert failures(results) == []
    assert {s["provider"] for r in results for s in r["sends"]} == {"primary"}
    return sorted(s["at"] for r in results for s in r["sends"])


@pytest.mark.slow
def test_eight_processes_lease_slots_and_the_limit_holds_within_the_bound(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """Two phases in the same 8 processes (one interpreter start each, not two), each
    phase with a Mailer of its own on a prefix of its own: past the limit, then under it.
    The phase under the limit comes last, so no other phase's Mailer talks to Redis
    while its script calls are counted."""
    over = RateLimit(messages=50, burst=10)
    under = RateLimit(messages=400)
    assert (over.batch, under.batch) == (5, 16)
    server = SMTPTestServer(auth=False).start()

    def phase(name: str, limit: dict[str, Any], **spec: Any) -> dict[str, Any]:
        # re-reads of the shared health every 30 s only: the calls counted are rates
        config = {
            "providers": [{**smtp(server, "primary"), "rate_limit": limit}],
            "health": health(redis_server, f"{prefix}{name}", refresh=30),
        }
        return {"config": config, **spec}

    try:
        phases = [
            # as fast as they can against 50/s, burst 10
            phase("o", {"messages": 50, "burst": 10}, max_seconds=6.0),
            # 8 x about 25/s against 400/s; 40 sends each, not "3 seconds' worth": a
            # loaded machine sent 90 in those 3 s, too few to say anything
            phase("u", {"messages": 400}, interval=0.04, sends=40, max_seconds=30.0),
        ]
        with workers(tmp_path, PROCESSES, {}, phases) as w:
            w.start(0)
            past = _sends(w.results(0))
            w.ready(1)  # every process has its second Mailer built and connected
            before = _rate_calls(redis_server.url)
            w.start(1)
            within = _sends(w.results(1))
            calls = _rate_calls(redis_server.url) - before
    finally:
        server.stop()

    # Past the limit: the rate holds in the steady state, and no window of a second
    # passes the limit by more than the bound P * (batch - 1) on top of what the limit
    # itself allows there. 50/s, not 100/s: the steady rate is also a floor (the limiter
    # must not hold sends back), and a loaded machine's 8 processes and test server
    # reached only 84/s
    bound = PROCESSES * (over.batch - 1)
    allowed = over.slots + over.messages  # a burst, then a second's worth
    assert _most_in(past, 1.0) <= allowed + bound, (_most_in(past, 1.0), allowed, bound)
    steady = [t for t in past if past[0] + 1.0 <= t < past[0] + 5.0]
    assert abs(len(steady) - 200) <= 20, len(steady)
    assert len(past) <= over.slots + (past[-1] - past[0]) * over.messages + bound

    # Under the limit: slots are leased 16 at a time, so Redis runs far fewer calls than
    # there are sends
    assert len(within) == PROCESSES * 40
    assert calls <= len(within) / 4, (calls, len(within))


@pytest.mark.anyio
async def test_a_lease_is_spent_locally_then_refilled_and_a_full_bucket_spaces_sends(
    redis_server: RedisServer, prefix: str
) -> None:
    """One process: 100 sends against 1,000/s (batch 16) make 6 round trips, not 100; a
    limit of 10/s, burst 10, still takes 10 at once and then spaces the rest."""
    msg = Message(sender="app@example.com", to=["u@example.org"], text="hi")
    store = {"store": redis_server.url, "prefix": prefix, "refresh": 30}
    async with Mailer(
        [ScriptedProvider("primary", rate_limit={"messages": 1000})], health=store
    ) as m:
        await m.send(msg)  # connected, the scripts loaded
        before = _rate_calls(redis_server.url)
        for _ in range(100):
            assert (await m.send(msg)).provider == "primary"
        calls = _rate_calls(redis_server.url) - before
    # the first send left 15 slots held; then one call per 16 sends (a stale lease, on
    # a stalled machine, may cost a call or two more)
    assert 6 <= calls <= 8, calls

    limit = {"messages": 10, "per": 1.0, "burst": 10}
    store["prefix"] = f"{prefix}b"
    async with Mailer(
        [ScriptedProvider("primary", rate_limit=limit)], health=store, budget={"pre_commit": 2.0}
    ) as m:
        started = time.monotonic()
        for _ in range(13):
            assert (await m.send(msg)).provider == "primary"
        took = time.monotonic() - started
    # 10 at once (the burst; batch 1 here: a tenth of 10), then 3 more 100 ms apart
    assert 0.25 <= took < 1.5, took


def test_a_lease_keeps_at_most_batch_minus_one_and_drops_stale_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailer._routing import ratelimit

    now = [100.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    limit = RateLimit(messages=1000, per=1.0, lease=8)
    assert limit.batch == 8
    assert RateLimit(messages=14).batch == 1  # SES's rate: one slot per call, as before
    assert RateLimit(messages=50).batch == 5  # a tenth of the limit
    lease = ratelimit.Lease(limit)
    assert not lease.take()
    lease.fill(8)  # one spent by the caller, 7 kept
    lease.fill(8)  # a concurrent refill: still at most 7 kept (the rest are wasted)
    assert lease.count == 7
    assert [lease.take() for _ in range(8)] == [True] * 7 + [False]
    lease.fill(5)
    now[0] += 1.0  # min(per, 1 s) later: stale, dropped rather than spent late
    assert not lease.take() and lease.count == 0


@pytest.mark.anyio
async def test_the_script_takes_only_what_is_free_now_then_one_slot_with_its_wait(
    redis_server: RedisServer, prefix: str
) -> None:
    """Burst 5, batch asked 16: 5 slots at once (wait 0), then one with a wait of one
    interval, then none past max_wait."""
    from mailer._routing.health import HealthConfig
    from mailer._routing.ratelimit import Gcra
    from mailer._routing.store import RedisHealth

    store = RedisHealth(HealthConfig(store=redis_server.url, prefix=prefix))
    limit = RateLimit(messages=10, per=1.0, burst=5)
    store.limits["p"] = Gcra(limit)
    await store.connect_once()
    try:
        key = [store._key("rate", "p")]
        interval = int(limit.interval * 1e6)
        taken, wait, _ = await store._call("rate", key, [interval, 5, 10**6, 0, 16])
        assert (taken, wait) == (5, 0)
        taken, wait, _ = await store._call("rate", key, [interval, 5, 10**6, 0, 16])
        assert taken == 1 and 0.05e6 < wait <= interval
        taken, _, _ = await store._call("rate", key, [interval, 5, 1000, 0, 16])
        assert taken == 0  # the next slot is further than 1 ms away: nothing taken
    finally:
        await store.aclose()
