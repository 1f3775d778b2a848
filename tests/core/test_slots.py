"""A provider's connection slots (mailer/providers/_slots.py): waiters in arrival order on
their own futures, a wait's budget on one loop timer, a freed slot never lost."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator

import anyio
import pytest

from mailer import TransientError
from mailer._attempt import AttemptContext
from mailer._clock import now
from mailer.providers._slots import Slots
from mailer.testing import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the slots are asyncio's (the SMTP pool, HTTP on asyncio)


@pytest.fixture
def budget() -> Iterator[AttemptContext]:
    """The test runs as an attempt with a 0.3 s pre-commit budget (30 s deadline)."""
    start = now()
    state = AttemptContext("p", deadline=start + 30.0, budget_deadline=start + 0.3, budget=0.3)
    token = state.enter()
    try:
        yield state
    finally:
        state.exit(token)


async def test_waiters_get_the_slots_in_arrival_order() -> None:
    slots = Slots(1, "pooled connection")
    await slots.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        order.append(i)

    with anyio.fail_after(5):
        tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert slots.waiting == 3 and order == []
        for expected in ([0], [0, 1], [0, 1, 2]):
            slots.release()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert order == expected
        await asyncio.gather(*tasks)
    assert slots.waiting == 0
    slots.release()
    await slots.acquire()  # the last one freed is free: taken at once


async def test_a_wait_that_saw_no_slot_freed_for_a_budget_gives_up_its_place(
    budget: AttemptContext,
) -> None:
    slots = Slots(1, "pooled connection")
    await slots.acquire()
    began = now()
    with anyio.fail_after(5), pytest.raises(TransientError) as caught:
        await slots.acquire()
    assert 0.25 <= now() - began < 2.0
    assert caught.value.no_verdict and not caught.value.retry_here
    assert "all 1 are busy" in str(caught.value) and slots.waiting == 0
    slots.release()  # to nobody: the timed-out wait is gone, so the slot is free
    with anyio.fail_after(1):
        await slots.acquire()


async def test_a_slot_freed_during_the_budget_keeps_the_wait_in_line(
    budget: AttemptContext,
) -> None:
    """A slot freed while "second" waits (to "first", ahead in line): when its budget
    runs out, "second" keeps its place with a new budget and gets the slot "first" gives
    back after. Each step waits for the one before (no guessed sleeps around the 0.3 s
    budget, which a loaded machine could overrun): the release comes before the budget
    can run out, and "first" holds the slot until "second" has started its new budget."""
    slots = Slots(1, "pooled connection")
    await slots.acquire()
    got: list[str] = []
    done = asyncio.Event()

    async def first() -> None:  # ahead in line, no budget of its own
        await slots.acquire()
        got.append("first")
        await done.wait()
        slots.release()

    async def second() -> None:
        await slots.acquire()
        got.append("second")

    with anyio.fail_after(5):
        # in a fresh context: no attempt, so no budget
        ahead = asyncio.get_running_loop().create_task(first(), context=contextvars.Context())
        await asyncio.sleep(0)
        behind = asyncio.ensure_future(second())
        await asyncio.sleep(0)
        ends = budget.budget_deadline
        slots.release()  # to "first": a slot was freed while "second" waited
        # "second"'s budget ran out while "first" held the slot: it started a new one
        assert await eventually(lambda: budget.budget_deadline != ends, interval=0.005)
        assert got == ["first"] and slots.waiting == 1
        done.set()
        await asyncio.gather(ahead, behind)  # "second" outlived its first budget
    assert got == ["first", "second"]


async def test_a_slot_handed_to_a_waiter_cancelled_in_that_turn_goes_to_the_next() -> None:
    slots = Slots(1, "pooled connection")
    await slots.acquire()
    got: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        got.append(i)

    with anyio.fail_after(5):
        cancelled = asyncio.ensure_future(wait(0))
        nxt = asyncio.ensure_future(wait(1))
        await asyncio.sleep(0)
        slots.release()  # handed to wait(0)...
        cancelled.cancel()  # ...which is cancelled before it runs again
        await nxt
    assert got == [1] and cancelled.cancelled() and slots.waiting == 0


async def test_a_slot_freed_in_the_turn_a_wait_timed_out_is_taken_by_that_wait(
    budget: AttemptContext,
) -> None:
    """The wait's budget timer and a release run in one loop turn, the timer first (a
    busy loop runs every due timer in one turn): release() finds no live waiter and
    frees the slot, and the wait, back in line because a slot was freed meanwhile, must
    take that slot. It used to queue behind it for another whole budget, nobody left to
    release it, and fail over: a healthy pool's burst failed over as if hung
    (tests/faults/test_slow_failures.py's busy-pool case, once in ten runs under load)."""
    slots = Slots(1, "pooled connection")
    await slots.acquire()
    loop = asyncio.get_running_loop()
    with anyio.fail_after(5):
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert slots.waiting == 1
        # Due after the wait's timer (the budget ends 0.3 s after the fixture began,
        # before now + 0.31), so the loop runs it right after that timer, in the same turn
        loop.call_later(0.31, slots.release)
        time.sleep(0.5)  # hold the loop past both: it then runs them in one turn
        await waiter  # the freed slot is the waiter's: no TransientError, no second budget
    assert slots.waiting == 0
    slots.release()
    with anyio.fail_after(1):
        await slots.acquire()  # exactly one slot, passed on once
