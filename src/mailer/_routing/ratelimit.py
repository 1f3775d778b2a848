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

The config model, :class:`~mailer._provider.RateLimit`, lives with the provider config it
is a field of; this module is what routing does with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import _clock
from .._provider import RateLimit

__all__ = ["Gcra", "RateLimit"]


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
