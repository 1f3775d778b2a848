"""The Mailer's admission gate (mailer/_routing/admission.py, issue 25): a burst larger
than the providers' connection slots waits on one future per send, in order, and each
send's deadline still counts from its call. The gate alone first, then a Mailer over a
real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.faults.kit import soak_on_primary

from mailer import AllProvidersFailed, DeliveryError, Mailer, Message, SendResult
from mailer._routing.admission import PER_SLOT, Admission
from mailer.providers import SMTPProvider
from mailer.testing import Certs, ScriptedProvider, SMTPTestServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def smtp(certs: Certs) -> Iterator[Callable[..., SMTPTestServer]]:
    started: list[SMTPTestServer] = []

    def make(**kwargs: Any) -> SMTPTestServer:
        server = SMTPTestServer(certs, auth=False, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def pooled(name: str, server: SMTPTestServer, **overrides: Any) -> SMTPProvider:
    return SMTPProvider.from_config(name, server.config(pool=True, **overrides))


def batch(n: int) -> list[Message]:
    return [
        Message(sender="app@example.com", to=[f"u{i}@example.org"], subject=f"m{i}", text="hi")
        for i in range(n)
    ]


# -- the gate alone ----------------------------------------------------------------------


async def test_admits_up_to_capacity_then_in_arrival_order() -> None:
    gate = Admission(2)
    assert gate.try_enter() and gate.try_enter()
    assert not gate.try_enter() and gate.active == 2
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.enter(time.monotonic() + 30)
        order.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert gate.waiting == 4 and order == []
    gate.leave()  # one ticket: the first waiter, and no other
    await asyncio.sleep(0)
    assert order == [0] and gate.active == 2
    gate.leave()
    gate.leave()
    await asyncio.sleep(0)
    assert order == [0, 1, 2] and gate.active == 2
    assert not gate.try_enter(), "a newcomer may not pass the one still waiting"
    gate.leave()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3] and gate.waiting == 0


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    gate = Admission(1)
    assert gate.try_enter()
    first = asyncio.ensure_future(gate.enter(time.monotonic() + 30))
    second = asyncio.ensure_future(gate.enter(time.monotonic() + 30))
    await asyncio.sleep(0)
    first.cancel()  # cancelled while waiting
    await asyncio.sleep(0)
    assert gate.waiting == 1
    gate.leave()
    await asyncio.wait_for(second, 5)
    assert gate.active == 1 and gate.waiting == 0
    # admitted and cancelled in the same loop turn: the ticket is passed on, not lost
    third = asyncio.ensure_future(gate.enter(time.monotonic() + 30))
    fourth = asyncio.ensure_future(gate.enter(time.monotonic() + 30))
    await asyncio.sleep(0)
    gate.leave()  # the ticket goes to third...
    third.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(fourth, 5)
    assert third.cancelled() and gate.active == 1


async def test_a_waiter_past_its_deadline_is_let_through() -> None:
    gate = Admission(1)
    assert gate.try_enter()  # held, never left: a hung send
    started = time.monotonic()
    await asyncio.wait_for(gate.enter(started + 0.1), 5)
    took = time.monotonic() - started
    assert 0.09 <= took < 2.0, took
    assert gate.active == 2, "over capacity: its send fails in the routing, without I/O"


def test_one_gate_serves_one_loop_after_another() -> None:
    """A Mailer used under ``asyncio.run`` twice: the first loop's waiters are cancelled
    at its end, and the second loop's waiters still get a deadline timer of their own."""
    gate = Admission(1)

    async def first() -> None:
        assert gate.try_enter()
        waiter = asyncio.ensure_future(gate.enter(time.monotonic() + 30))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        gate.leave()

    async def second() -> float:
        assert gate.try_enter()  # held: the waiter below can only pass by its deadline
        started = time.monotonic()
        await asyncio.wait_for(gate.enter(started + 0.1), 5)
        return time.monotonic() - started

    asyncio.run(first())
    assert gate.active == 0 and gate.waiting == 0
    took = asyncio.run(second())
    assert 0.09 <= took < 2.0, took


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Admission(0)


# -- on a Mailer ---------------------------------------------------------------------------


def test_sized_from_the_pools_and_off_where_something_else_paces(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    server = smtp()
    two = Mailer([pooled("a", server, max_connections=2), pooled("b", server, max_connections=3)])
    assert two._admission is not None and two._admission.capacity == 5 * PER_SLOT
    unpooled = SMTPProvider.from_config("c", server.config(pool=False))
    assert Mailer([pooled("a", server), unpooled])._admission is None
    limited = SMTPProvider.from_config(
        "d", server.config(pool=True, rate_limit={"messages": 100, "per": 1.0})
    )
    assert Mailer([limited])._admission is None
    assert Mailer([pooled("a", server), ScriptedProvider("e")])._admission is None


async def test_a_burst_goes_out_once_each_in_order_with_few_under_way(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    server = smtp(pipelining=True)
    mailer = Mailer([pooled("a", server, max_connections=1)])
    gate = mailer._admission
    assert gate is not None and gate.capacity == PER_SLOT
    started: list[str | None] = []
    under_way: list[int] = []

    def on_event(event: Any) -> None:
        if event.kind == "start":
            started.append(event.message_id)
            under_way.append(gate.active)

    mailer.subscribe(on_event)
    messages = batch(200)
    async with mailer:
        results = await asyncio.wait_for(asyncio.gather(*map(mailer.send, messages)), 60)
    assert all(isinstance(r, SendResult) and r.status == "sent" for r in results)
    assert max(under_way) <= PER_SLOT
    assert started == [m.message_id for m in messages], "FIFO: started in call order"
    received = server.state.message_ids()
    assert sorted(received) == sorted(m.message_id for m in messages)  # each once
    assert gate.active == 0 and gate.waiting == 0


async def test_the_deadline_counts_the_wait_at_the_gate(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    """Each message answered 0.4 s after its ".", one connection, send_timeout 1 s: the
    sends still at the gate when their second is up fail as a send whose deadline passed
    before a provider was tried, within their own second, not after waiting for a turn."""
    server = smtp()
    server.state.fail("DATA_END", "delay:0.4", times=None)
    mailer = Mailer([pooled("a", server, max_connections=1)], send_timeout=1.0)
    spans: list[float] = []
    outcomes: list[SendResult | BaseException] = []

    async def one(message: Message) -> None:
        began = time.monotonic()
        try:
            outcomes.append(await mailer.send(message))
        except DeliveryError as exc:  # failed, or uncertain at the deadline
            outcomes.append(exc)
        spans.append(time.monotonic() - began)

    async with mailer:
        await asyncio.wait_for(asyncio.gather(*map(one, batch(12))), 30)
    sent = [o for o in outcomes if isinstance(o, SendResult)]
    failed = [o for o in outcomes if isinstance(o, AllProvidersFailed)]
    assert sent and failed and len(outcomes) == 12
    assert max(spans) < 1.0 + 0.5 + 0.5, spans  # the deadline, the scope's grace, slack
    assert any("send_timeout expired before this provider was tried" in str(f) for f in failed)
    received = set(server.state.message_ids())
    assert {r.message_id for r in sent} <= received
    assert not {f.message.message_id for f in failed if f.message} & received


async def test_sends_to_named_providers_bypass_the_gate(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    server = smtp()
    mailer = Mailer([pooled("a", server, max_connections=1)])
    gate = mailer._admission
    assert gate is not None
    seen: list[int] = []
    mailer.subscribe(lambda e: seen.append(gate.active) if e.kind == "start" else None)
    async with mailer:
        await mailer.send(batch(1)[0], providers=["a"])
        await mailer.send(batch(1)[0])
    assert seen == [0, 1]


SOAK_QUEUED = int(os.environ.get("MAILER_SOAK_QUEUED", "0"))


@pytest.mark.skipif(not SOAK_QUEUED, reason="a soak: `make soak` sets MAILER_SOAK_QUEUED")
@pytest.mark.timeout(600)
async def test_soak_a_burst_through_the_gate(smtp: Callable[..., SMTPTestServer]) -> None:
    """tests/faults' soak with an SMTP backup instead of a scripted one, so that the
    admission gate is on (every provider a pool): MAILER_SOAK_QUEUED sends at once on the
    default pool of 5, default settings; each goes out once, on the primary."""
    primary, backup = smtp(), smtp()
    mailer = Mailer([pooled("a", primary), pooled("b", backup)])
    assert mailer._admission is not None
    took = await soak_on_primary(
        mailer,
        batch(SOAK_QUEUED),
        lambda: {"a": primary.received(), "b": backup.received()},
    )
    print(
        f"{SOAK_QUEUED} queued sends through the gate in {took:.1f} s "
        f"({SOAK_QUEUED / took:.0f} msg/s)"
    )
