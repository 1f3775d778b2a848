"""What the starved-loop tests share (SMTP in test_loop_lag, HTTP in test_http_loop_lag):
the budget they measure against, the slack a shared machine needs, and the CPU work that
holds the event loop."""

from __future__ import annotations

import time
from typing import Any

from mailer._routing.budget import BudgetConfig

BUDGET = BudgetConfig().pre_commit  # the default, 3 s
#: a shorter budget, for the cases that do not need the default's scale
SHORT = {"pre_commit": 1.0, "max": 15.0}
#: what a send may take beyond its expected time on this shared, noisy machine
SLACK = 1.5


def burn(seconds: float) -> None:
    """Hold the event loop with CPU work for ``seconds`` (bounded by the clock)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def failed_attempts(result: Any) -> list[str]:
    return [str(a.error) for a in result.attempts if a.error is not None]
