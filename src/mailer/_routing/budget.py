"""The pre-commit budget: how long an attempt may take to reach its commit point.

A fixed budget has to choose between two users: the one whose provider hangs (wants it
short: every send waits the budget before failing over) and the one whose healthy
provider is far away or slow to authenticate (wants it long: a budget shorter than its
set-up time fails over sends that would have gone through, and opens the breaker). So
the configured budget is a floor, and each provider's budget grows from what it is seen
to need, the way TCP sets its retransmission timeout from measured round trips (RFC
6298): ``srtt + 4 * rttvar`` of the observed times to the commit point, never below the
floor and never above ``max``.

The budget counts the provider's time, not this process's: time the event loop was held
up (its lag, measured by :mod:`mailer._looplag`) moves the budget's end on, so a loop
starved by CPU work does not turn a healthy provider's unread reply into a verdict of
"hung" that opens its breaker and releases every queued send. An idle loop lags by
nothing, so a truly hung provider is still abandoned at the budget; a lagging one is
abandoned after a budget of the loop's own running time, within the send's deadline
(``loop_lag = False`` restores wall time). Set-up samples leave the lag out too.

A hung provider teaches nothing (an attempt that ran out of budget is not a sample), so
it cannot talk its own budget up; a slow-but-healthy provider that once tripped the
floor is probed in the background with the long limit, and its probe's time is a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BudgetConfig", "SetupEstimator"]


class BudgetConfig(BaseModel):
    """``budget`` in the Mailer config. Seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the floor: an attempt always gets at least this long to reach its commit point
    pre_commit: float = Field(default=3.0, gt=0)
    #: the ceiling for the adaptive budget, and the limit of a background probe
    max: float = Field(default=15.0, gt=0)
    #: grow each provider's budget from its observed set-up times (False: always the floor)
    adaptive: bool = True
    #: time this process's own event loop was held up (CPU work, a burst of sends
    #: building their messages, a throttled container) does not count against the
    #: budget: a reply that arrived in time but waited unread for a busy loop is not a
    #: hang (mailer._looplag). False: the budget counts wall time (asyncio only; trio
    #: always counts wall time)
    loop_lag: bool = True

    @model_validator(mode="after")
    def _order(self) -> BudgetConfig:
        if self.max < self.pre_commit:
            raise ValueError("budget.max must be at least budget.pre_commit")
        return self


@dataclass(slots=True)
class SetupEstimator:
    """RFC 6298's smoothed mean and deviation, over seconds to the commit point."""

    config: BudgetConfig
    srtt: float | None = None
    rttvar: float = 0.0

    def observe(self, seconds: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
        self.srtt = 0.875 * self.srtt + 0.125 * seconds

    def budget(self) -> float:
        cfg = self.config
        if not cfg.adaptive or self.srtt is None:
            return cfg.pre_commit
        return min(max(self.srtt + 4 * self.rttvar, cfg.pre_commit), cfg.max)
