"""The event loop's lag monitor (mailer._looplag) and the attempt's use of it, on real
loops: what it counts, what it never counts, and that it costs nothing when idle."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time
import weakref

import anyio
import pytest

from mailer import _looplag
from mailer._attempt import AttemptContext


def burn(seconds: float) -> None:
    """Hold the event loop with CPU work for ``seconds`` (bounded by the clock)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def test_an_idle_loop_lags_by_nothing() -> None:
    """Five beats of an idle loop read zero, unless the machine itself held the process
    up. A witness timer every 10 ms tells which: a beat can only be late by what the
    witness was late plus its 10 ms, so when no witness wake was more than 10 ms late
    no beat passed SLACK and the lag is exactly zero; when the machine held the process
    up (a loaded CI machine did, for a 92 ms lag), the lag is still no more than the
    witness's lateness in all (a lower bound of the time the loop did not run)."""
    witness = 0.01

    async def go() -> tuple[float, float, float]:
        lag = _looplag.monitor(asyncio.get_running_loop())
        assert lag is not None
        start = lag.read(keep=1.0)
        worst = total = 0.0
        end = time.monotonic() + 0.5  # five beats; the loop is bounded by the clock
        while (before := time.monotonic()) < end:
            await asyncio.sleep(witness)
            late = max(time.monotonic() - before - witness, 0.0)
            worst, total = max(worst, late), total + late
        return lag.read() - start, worst, total

    lag, worst, total = asyncio.run(go())
    if worst <= witness:  # the process ran on time: no beat was late past SLACK
        assert 2 * witness <= _looplag.SLACK
        assert lag == 0.0, (lag, worst)
    else:
        assert 0.0 <= lag <= total, (lag, worst, total)


def test_a_stall_counts_while_under_way_and_after() -> None:
    """Read right after the CPU work (before the late beat runs: a stall still under
    way) and again after the beat: both see it, neither more than it lasted."""
    stall = 0.4

    async def go() -> tuple[float, float, float]:
        lag = _looplag.monitor(asyncio.get_running_loop())
        assert lag is not None
        start = lag.read(keep=2.0)
        await asyncio.sleep(0.05)
        began = time.monotonic()
        burn(stall)
        during = lag.read() - start
        held = time.monotonic() - began
        stalled = lag.stalled
        # The late beat, overdue, runs at the loop's next turn and records the stall.
        # Read right after it, not after a guessed 0.15 s: a loaded machine that held
        # the process up meanwhile would add its own lag past the bound below
        for _ in range(200):  # bounded: 200 turns of 5 ms
            if lag.stalled != stalled:
                break
            await asyncio.sleep(0.005)
        return during, lag.read() - start, held

    during, after, held = asyncio.run(go())
    # at most the beat interval and its slack go uncounted; nothing is counted twice
    floor = stall - _looplag.INTERVAL - _looplag.SLACK
    assert floor <= during <= held + 0.001, (during, held)
    assert during <= after <= held + 0.05, (during, after, held)


def test_the_heartbeat_stops_when_no_one_needs_it_and_restarts_on_demand() -> None:
    async def go() -> None:
        lag = _looplag.monitor(asyncio.get_running_loop())
        assert lag is not None
        lag.read(keep=0.15)
        assert lag.running
        for _ in range(40):  # bounded: 40 x 50 ms
            if not lag.running:
                break
            await asyncio.sleep(0.05)
        assert not lag.running  # no wake-ups on a loop that sends nothing
        before = lag.read()  # a stopped heartbeat counts no stall under way ...
        burn(0.2)
        assert lag.read(keep=1.0) == before  # ... and this read started it again
        assert lag.running
        burn(0.3)
        assert lag.read() - before >= 0.3 - _looplag.INTERVAL - _looplag.SLACK
        lag.stop()

    asyncio.run(go())


def test_one_monitor_per_loop_and_none_without_asyncio() -> None:
    async def mine() -> _looplag.LoopLag | None:
        return _looplag.monitor(asyncio.get_running_loop())

    loop = asyncio.new_event_loop()
    try:
        a = loop.run_until_complete(mine())
        b = loop.run_until_complete(mine())
    finally:
        loop.close()
    c = asyncio.run(mine())
    assert a is b and a is not None and c is not None and c is not a
    assert _looplag.monitor(None) is None


def test_the_heartbeat_keeps_nothing_of_the_send_that_started_it() -> None:
    """Its beats run in an empty context of their own: a timer armed inside a send
    would otherwise keep the send's context (routing, provider) alive while it beats."""

    class Held:
        pass

    var: contextvars.ContextVar[Held] = contextvars.ContextVar("held")

    async def go() -> weakref.ref[Held]:
        held = Held()
        var.set(held)
        lag = _looplag.monitor(asyncio.get_running_loop())
        assert lag is not None
        lag.read(keep=30.0)  # started in this context, still beating at the end
        return weakref.ref(held)

    loop = asyncio.new_event_loop()
    try:
        ref = loop.run_until_complete(loop.create_task(go()))
        gc.collect()
        assert ref() is None
    finally:
        loop.close()


def test_an_attempt_under_trio_counts_wall_time() -> None:
    async def go() -> AttemptContext:
        return AttemptContext.open("p", deadline=1e12, started=0.0, grace=0.5, budget=3.0)

    state = anyio.run(go, backend="trio")
    assert state.lag is None and state.catch_up() == 0.0 and not state.extend()


@pytest.mark.parametrize("loop_lag", [True, False])
def test_an_attempt_moves_its_budget_by_the_lag_only_when_told(loop_lag: bool) -> None:
    async def go() -> tuple[float, float, float]:
        from mailer import _clock

        now = _clock.now()
        state = AttemptContext.open(
            "p", deadline=now + 60, started=now, grace=0.1, budget=1.0, loop_lag=loop_lag
        )
        before = state.limit()
        burn(0.5)
        await asyncio.sleep(0.12)  # the late beat records the stall; limit() reads it
        after = state.limit()
        state.disarm()
        assert before is not None and after is not None
        return before, after, state.lagged

    before, after, lagged = asyncio.run(go())
    if loop_lag:
        floor = 0.5 - _looplag.INTERVAL - _looplag.SLACK
        assert after - before == pytest.approx(lagged) and lagged >= floor
    else:
        assert after == before and lagged == 0.0


def test_a_timer_that_fires_after_a_stall_sees_it_before_the_heartbeat_does() -> None:
    """:meth:`AttemptContext.extend` (a step's budget-cut timer fired) counts a stall
    still under way: right after the CPU work, with no beat run since, the budget's end
    has moved on and the step may wait again; on an idle loop it may not."""

    async def go() -> tuple[bool, bool, float]:
        from mailer import _clock

        now = _clock.now()
        state = AttemptContext.open("p", deadline=now + 60, started=now, grace=0.1, budget=0.3)
        # the budget ran out on an idle loop: no respite. 0.5 s past it, not 0.05 s (a
        # guess a loaded machine could undo: a beat late by 70 ms counts 50 ms of lag and
        # moves the budget's end past now): only a stall of half a second would
        await asyncio.sleep(0.8)
        idle = state.extend()
        state.progress()  # a fresh budget
        burn(0.5)
        lagged = state.extend()
        state.disarm()
        return idle, lagged, state.lagged

    idle, lagged, seconds = asyncio.run(go())
    assert not idle and lagged and seconds >= 0.5 - _looplag.INTERVAL - _looplag.SLACK
