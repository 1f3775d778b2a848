"""How long this process's own event loop could not run: its lag, kept apart from a
provider's slowness.

The pre-commit budget judges a provider by how long an attempt takes to reach its commit
point. But the attempt only sees an answer when the event loop gets round to reading it:
a loop held up by CPU work (a burst of thousands of sends building their messages, a
CPU-heavy app, a throttled container, a profiler) leaves a reply that arrived in time
unread in the socket, and without this module the budget would blame the provider for
it, open its breaker, and release every queued send to failover (docs/benchmarks.md,
the note at the end of "The profile: where the time went").

So the time the loop did not run is measured and not counted against the provider.
:class:`LoopLag` is a heartbeat: one timer per event loop, every :data:`INTERVAL`
seconds while some attempt needs it, that adds up how late it fires. A timer that fires
``L`` seconds late proves the loop did not poll its sockets or run its timers for at
least ``L`` seconds, so the total is a lower bound of the time the loop was held up; a
stall still under way counts too (:meth:`LoopLag.read`: how late the next beat already
is), so a reader right after a long stall sees it before the heartbeat runs. Lateness
up to :data:`SLACK` a beat (an idle loop's jitter, a busy loop's ordinary turns, a
loaded machine's scheduling) is not counted, so an idle or ordinarily busy loop reads
zero and a hung server still fails over at the budget.

A reader keeps two readings and uses their difference (the lag between them); the
absolute value means nothing. It costs one ``time.monotonic()`` and a few attribute
reads, and no object or timer per send: the heartbeat is per loop, and it stops itself
once no attempt has asked for it for a while (:meth:`LoopLag.read`'s ``keep``).

asyncio only (and uvloop): under trio :func:`monitor` returns None and the budget counts
wall time, as before. The clock is ``time.monotonic()``, not :mod:`mailer._clock`: the
lag is a property of the real loop, which a test's fake clock does not move.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
import weakref
from collections.abc import Callable

__all__ = ["INTERVAL", "SLACK", "LoopLag", "monitor"]

#: seconds between two beats of the heartbeat (while it runs): a stall shorter than
#: this may be counted only in part, never more than it lasted
INTERVAL = 0.1
#: lateness of a beat not counted as lag: timer jitter, a busy loop's ordinary turns, a
#: thread holding the GIL for a few switch intervals (5 ms each), the scheduler of a
#: loaded machine. At 5 ms a loaded machine's ordinary delays added 50-85 ms to a hung
#: server's 3 s failover; a stall worth counting against a budget of seconds is far
#: longer than this, and is counted less only this much
SLACK = 0.02

_monotonic = time.monotonic


class LoopLag:
    """The heartbeat of one asyncio event loop; see the module."""

    __slots__ = ("__weakref__", "_context", "_handle", "due", "stalled", "until")

    def __init__(self) -> None:
        #: seconds of lag counted by beats that have run
        self.stalled = 0.0
        #: when the next beat is due (monotonic), or inf while the heartbeat is stopped
        self.due = math.inf
        #: the heartbeat runs until then (monotonic), unless a reader keeps it longer
        self.until = -math.inf
        self._handle: asyncio.TimerHandle | None = None
        #: the beats run in an empty context of their own: never in the one of the send
        #: that started the heartbeat, which it would keep alive (its routing, provider)
        self._context = contextvars.Context()

    @property
    def running(self) -> bool:
        return self._handle is not None

    def read(self, keep: float = 0.0) -> float:
        """The running total of lag, in seconds, including a stall under way; and keep
        the heartbeat beating for at least ``keep`` more seconds (start it if stopped;
        ``keep = 0``: only read).

        Call it on the loop it measures (a stopped heartbeat starts on the running one).
        """
        now = _monotonic()
        late = now - self.due - SLACK
        until = now + keep
        if until > self.until and keep > 0.0:
            self.until = until
            if self._handle is None:
                self._start(now)
        return self.stalled + late if late > 0 else self.stalled

    def stop(self) -> None:
        """Stop the heartbeat now (a closing loop); the next :meth:`read` restarts it."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self.due = math.inf

    def _start(self, now: float) -> None:
        self.due = now + INTERVAL
        self._handle = asyncio.get_running_loop().call_later(
            INTERVAL, self._beat, context=self._context
        )

    def _beat(self) -> None:
        now = _monotonic()
        late = now - self.due - SLACK
        if late > 0:
            self.stalled += late
        if now >= self.until:
            self._handle, self.due = None, math.inf  # nobody needs it: no idle wake-ups
            return
        self.due = now + INTERVAL
        self._handle = asyncio.get_running_loop().call_later(
            INTERVAL, self._beat, context=self._context
        )


#: the last loop asked about (weakly when it can be: a closed loop must not be kept, nor
#: what it held) and its monitor: the common case is one loop per process
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], LoopLag] | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = (
    weakref.WeakKeyDictionary()
)


def monitor(loop: asyncio.AbstractEventLoop | None) -> LoopLag | None:
    """The lag monitor of ``loop`` (the running asyncio loop), made on first use; None
    without one (trio). Nothing here holds a loop that can be weakly referenced (asyncio's
    can): only the loop's pending beat refers to the monitor, so both go with the loop."""
    global _last
    if loop is None:
        return None
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    try:
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = LoopLag()
        _last = (weakref.ref(loop), found)
    except TypeError:  # a loop that cannot be weakly referenced: kept until the next one
        found = LoopLag()
        _last = ((lambda: loop), found)
    return found
