"""Rate limits per provider: at most ``messages`` per ``per`` seconds.

A provider's own limit (SES's maximum send rate, an SMTP relay's "5 per second", a Gmail
account's daily cap) is cheaper to respect than to discover: a send over it earns a 421
or a 429 and rests the provider for everyone. So each send asks for a slot first.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one
number, the "theoretical arrival time"): slots are ``per / messages`` apart, and up to
``burst`` of them (by default the whole ``messages``, as Nodemailer's window and a daily
cap allow) may be taken at once. One number per provider makes it one atomic Lua step in
Redis, shared by every process (:mod:`mailer._routing.store`); with the memory store, or
while Redis is unreachable, the same arithmetic runs in-process.

A send whose slot is further away than it may wait does not take the slot: it goes on to
the next provider (no verdict on this one's health). How long it may wait is
``max_wait``: ``"budget"`` (default) is the attempt's pre-commit budget, so a rate limit
never costs a caller more than a hang would; ``"deadline"`` waits up to the send's
deadline (a provider with nothing behind it); a number is seconds.

**Leased slots.** With Redis, one Lua call per send was a round trip per send (about
100 us). So a process takes up to ``rate_limit.batch`` slots that are free *now* in one
call and spends them locally (:class:`Lease`); when none is free now it asks for one
slot with a wait, as before, so a saturated limit is still spaced exactly. Slots are
only ever taken from the shared bucket, never made up: over any long run no process
sends more than the limit grants. What leasing changes is *when* a slot is used: up to
``batch - 1`` slots per process may be spent after the moment they were taken (at most
``_LEASE_HOLD`` later, else they are dropped). So in any window at most ``P * (batch -
1)`` sends beyond what the limit allows there (``P`` processes sharing it), and a
process that crashes only leaves its unspent slots unused: below the limit, never past
it. docs/configuration.md states the bound.

The config model, :class:`~mailer._provider.RateLimit`, lives with the provider config it
is a field of; this module is what routing does with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import _clock
from .._provider import RateLimit

__all__ = ["Gcra", "Lease", "RateLimit"]


@dataclass(slots=True)
class Gcra:
    """The in-process limiter (the Redis one runs the same steps in Lua)."""

    limit: RateLimit
    clock: Callable[[], float] = _clock.now
    #: the theoretical arrival time of the next slot
    tat: float = 0.0

    def reserve(self, max_wait: float) -> float | None:
        """Take the next slot if it comes within ``max_wait`` seconds: how long to wait
        for it (0: now). None: it is further away, and nothing was taken."""
        now = self.clock()
        interval = self.limit.interval
        tat = max(self.tat, now) + interval
        wait = max(tat - self.limit.slots * interval - now, 0.0)
        if wait > max_wait:
            return None
        self.tat = tat
        return wait

    def left(self) -> tuple[int, float]:
        """Slots that may be taken now, and seconds until the next one frees up."""
        now = self.clock()
        interval = self.limit.interval
        free = (now - (max(self.tat, now) - self.limit.slots * interval)) / interval
        slots = max(min(int(free + 1e-9), self.limit.slots), 0)
        return slots, 0.0 if slots else (1.0 - free) * interval


#: seconds a leased slot may be kept unspent (or ``per``, if shorter); then it is dropped
_LEASE_HOLD = 1.0


@dataclass(slots=True)
class Lease:
    """Slots taken from the shared limiter ahead of use, spent by this process alone.

    Kept per provider and per process: a forked child starts with none (two processes
    spending the same slots would pass the limit).
    """

    limit: RateLimit
    #: slots held, and until when they may be spent (time.monotonic())
    count: int = 0
    until: float = 0.0

    def take(self) -> bool:
        """Spend a held slot, if one is left and not stale."""
        if self.count > 0:
            if time.monotonic() < self.until:
                self.count -= 1
                return True
            self.count = 0
        return False

    def fill(self, taken: int) -> None:
        """``taken`` slots were granted at once: one is spent now, the rest kept (up to
        ``batch - 1``: concurrent refills waste a few rather than pass the bound)."""
        if taken > 1:
            until = time.monotonic() + min(_LEASE_HOLD, self.limit.per)
            # slots still held keep their own (earlier) end
            self.until = min(self.until, until) if self.count else until
            self.count = min(self.count + taken - 1, self.limit.batch - 1)
