"""The attempt layer as a provider sees it: one AttemptContext, detached outside routing."""

from __future__ import annotations

import pytest

from mailer import DeliveryUncertain, TransientError
from mailer._attempt import AttemptContext, attached, commit_hooks, current_attempt
from mailer._clock import FakeClock
from mailer._errors import possibly_delivered
from mailer.providers._memory import MemoryProvider

pytestmark = pytest.mark.anyio


async def test_a_provider_on_its_own_sees_a_detached_attempt_that_changes_nothing() -> None:
    attempt = current_attempt()
    assert not attached(attempt)
    assert attempt.timeout(7.0) == 7.0 and attempt.timeout(None) is None
    await attempt.commit()
    attempt.progress()
    attempt.queued(3.0)
    assert not attempt.committed and attempt.waited == 0.0, "the shared stand-in moved"
    assert MemoryProvider("m").time_left(4.0) == 4.0


async def test_time_left_is_cut_to_the_budget_then_to_the_deadline() -> None:
    provider = MemoryProvider("m")
    crossed: list[str] = []

    async def hook() -> None:
        crossed.append(current_attempt().provider)

    with FakeClock(10.0) as clock:
        state = AttemptContext("m", deadline=clock.now + 9.0, budget_deadline=clock.now + 2.0)
        with commit_hooks(hook):
            token = state.enter()
        try:
            assert current_attempt() is state and attached(state)
            assert provider.time_left(30.0) == pytest.approx(2.0)
            clock.advance(1.0)
            state.queued(0.25)
            await provider.commit_point()
            assert provider.time_left(30.0) == pytest.approx(8.0), "budget not lifted"
            assert state.setup_time == pytest.approx(0.75), "queueing counted as set-up"
        finally:
            state.exit(token)
    assert crossed == ["m"]
    assert not attached(current_attempt())


def test_one_verdict_on_whether_a_message_may_have_been_delivered() -> None:
    refused = TransientError("no", provider="a")
    assert possibly_delivered(None), "a success delivered it"
    assert not possibly_delivered(refused)
    assert possibly_delivered(refused, committed=True), "it failed after crossing"
    assert possibly_delivered(refused, committed=None), "its provider cannot say"
    assert possibly_delivered(DeliveryUncertain("?", provider="a"))
    assert not possibly_delivered(RuntimeError("foreign")), "callers decide on foreign ones"
