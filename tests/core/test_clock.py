"""One clock: breakers, attempt deadlines and budgets, and rate limits all read
mailer._clock, so one installed FakeClock moves every one of them at once."""

from __future__ import annotations

import time

import pytest

from mailer import AuthError
from mailer._attempt import AttemptContext
from mailer._clock import FakeClock, now
from mailer._provider import RateLimit
from mailer._routing.runtime import Runtime
from mailer.providers._memory import MemoryConfig, MemoryProvider


def test_a_fake_clock_moves_breakers_deadlines_budgets_and_rate_limits_together() -> None:
    provider = MemoryProvider("m", MemoryConfig(rate_limit=RateLimit(messages=1, per=10.0)))
    with FakeClock(500.0) as clock:
        leaf = Runtime().leaf(provider)  # built with the defaults: nothing injected
        attempt = AttemptContext("m", deadline=clock.now + 5.0, budget_deadline=clock.now + 2.0)
        assert leaf.limiter is not None

        leaf.breaker.record_failure(AuthError("refused", provider="m"))
        assert leaf.limiter.reserve(0) == 0  # the one slot of the window
        assert leaf.limiter.reserve(0) is None
        assert attempt.timeout(None) == pytest.approx(2.0)  # the budget comes first
        assert attempt.limited_by() == "the pre-commit budget"
        assert not leaf.breaker.available()

        clock.advance(3.0)  # past the budget: what is left is the send's deadline's
        attempt.committed = True
        assert attempt.timeout(None) == pytest.approx(2.0)
        assert attempt.limited_by() == "the send deadline"

        clock.advance(300.0)  # auth_cooldown: the breaker may probe, the window is new
        assert leaf.breaker.available()
        assert leaf.limiter.reserve(0) == 0
        assert attempt.timeout(30.0) == 0.001  # the deadline passed: a millisecond floor
    assert abs(now() - time.monotonic()) < 1.0, "the real clock is back"


def test_a_fake_clock_is_also_a_plain_callable_for_apis_that_take_one() -> None:
    clock = FakeClock(100.0)
    assert clock() == 100.0
    clock.now += 1.5
    assert clock() == 101.5
    assert abs(now() - time.monotonic()) < 1.0, "not installed: the seam reads real time"
