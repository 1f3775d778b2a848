"""The Mailer's admission gate: sends beyond what its providers can carry wait cheaply.

Why it exists: a burst of sends larger than the providers' connections (3,000 sends on a
pool of 5) used to start every one of them at once. Each built its defaults, rendered
its message, opened its attempt (an anyio cancel scope, timers with copied contexts) and
stacked a chain of ~15 coroutine frames before it waited for a connection slot: about
80 objects per queued send for the cyclic garbage collector to walk, a fifth of the
client's CPU at 5 connections (docs/benchmarks.md, issue 25). Here a send that finds the
route full waits on one future before it builds any of that, and builds it when a send
ahead of it finishes.

What it keeps:

* **Nothing is refused or reordered.** The gate only delays the start of a send while
  ``capacity`` sends of this Mailer are under way; waiters go in arrival order (FIFO).
  ``capacity`` is a few times the providers' connection slots (:data:`PER_SLOT`), so
  sends still queue at the slots themselves (the pool's hand-off needs a waiting send
  to pipeline the next message behind the previous one's data).
* **The deadline counts from the call.** A send's ``send_timeout`` includes its wait
  here. One loop timer per gate (not one per waiter: the deadlines are in arrival
  order, as every send of a Mailer has the same ``send_timeout``) lets a waiter through
  when its deadline has passed; the routing then fails it as any send whose deadline
  passed before a provider was tried ("send_timeout expired before this provider was
  tried"), with the usual events.
* **The pre-commit budget and failover are the slots' business, unchanged.** A waiter
  here has no attempt yet, so no budget runs; the admitted sends queue at the slots
  under the same rules as before (mailer/providers/_slots.py), and when a provider is
  found down or hung the verdict releases them, the breaker opens, and the sends let in
  after them skip it. So a queued send behind a dead provider fails over when its turn
  at the gate comes, which is as soon as the admitted sends have been released.
* **Where something else paces sends, the gate stands aside**: a Mailer with a provider
  that has no bounded connection count (:attr:`mailer.Provider.concurrency` None) or a
  ``rate_limit`` (whose ``max_wait`` verdicts depend on when each send reserves) has no
  gate, nor have sends restricted to some providers (``send(providers=...)``: they would
  wait behind sends for the others), nor code not running on asyncio.
* **Cancellation** of a waiter removes it; a ticket handed to a waiter cancelled in the
  same loop turn is passed on to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .. import _clock

__all__ = ["PER_SLOT", "Admission"]

#: sends admitted per connection slot of the route: one holding the connection, one
#: reading its verdict after handing the connection on, and two waiting at the slots so
#: that a hand-off always finds the next message ready
PER_SLOT = 4


class Admission:
    """At most ``capacity`` sends under way; the rest wait in order, each on a future."""

    __slots__ = ("_active", "_timer", "_timer_loop", "_waiters", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an admission gate needs capacity >= 1")
        self.capacity = capacity
        self._active = 0
        #: (deadline on mailer._clock, future) per waiting send, in arrival order
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        #: the loop the timer is on: a Mailer may serve one loop after another
        #: (``asyncio.run`` twice), and a timer left on a finished loop never fires
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> int:
        """Sends admitted and not yet finished."""
        return self._active

    @property
    def waiting(self) -> int:
        """Sends waiting to be admitted (cancelled ones may count until they wake)."""
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Admit at once when there is room and no one is waiting (FIFO)."""
        if self._active < self.capacity and not self._waiters:
            self._active += 1
            return True
        return False

    async def enter(self, deadline: float) -> None:
        """Wait for a turn; admitted anyway once ``deadline`` (mailer._clock) has passed.

        Only after :meth:`try_enter` said no. On return the caller holds a ticket and
        must :meth:`leave` once its send ends.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((deadline, future))
        if self._timer is None or self._timer_loop is not loop:
            self._arm(loop)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.leave()  # admitted and cancelled in the same turn: pass it on
            else:
                self._forget(future)
            raise

    def leave(self) -> None:
        """One admitted send ended: admit the next waiter, if any."""
        self._active -= 1
        waiters = self._waiters
        while waiters and self._active < self.capacity:
            _, future = waiters.popleft()
            if future.done():  # cancelled while waiting
                continue
            try:
                future.set_result(None)
            except RuntimeError:  # its loop is closed: that send is gone
                continue
            self._active += 1
        if not waiters:
            self._disarm()

    def _forget(self, future: asyncio.Future[None]) -> None:
        for index, (_, waiter) in enumerate(self._waiters):
            if waiter is future:
                del self._waiters[index]
                break
        if not self._waiters:
            self._disarm()

    def _disarm(self) -> None:
        timer, self._timer, self._timer_loop = self._timer, None, None
        if timer is not None:
            timer.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer for the gate, at the first waiter's deadline."""
        if not self._waiters:
            self._timer = self._timer_loop = None
            return
        # at least a millisecond: a loop clock a hair ahead of ours must not spin
        delay = max(self._waiters[0][0] - _clock.now(), 1e-3)
        self._timer = loop.call_later(delay, self._expire, loop)
        self._timer_loop = loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let through every waiter whose deadline has passed (over capacity: its send
        fails at once in the routing, without I/O), then wait for the next one's."""
        now = _clock.now()
        waiters = self._waiters
        while waiters and waiters[0][0] <= now:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                self._active += 1
        self._arm(loop)
