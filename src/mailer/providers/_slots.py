"""A provider's connection slots: waiting for one is queueing, not a hang.

The SMTP pool and the HTTP providers each allow ``size`` requests in flight. A send that
finds every slot taken waits; that wait comes before its commit point, so the attempt's
pre-commit budget (mailer/_attempt.py) bounds it. Counted naively, a burst larger than
what the slots drain in one budget (10,000 sends on 5 SMTP connections; 200 on 10 HTTP
connections to an API answering in 0.2 s) fails over, or fails, though the provider is
healthy, and an HTTP wait cut by the budget even read as a hung provider and opened its
breaker. The rule here:

* A waiter whose budget runs out checks whether any slot was freed meanwhile. If one
  was, the provider is working through our own queue: the budget restarts (as it does
  for each RCPT answer of a long envelope) and the waiter keeps its place. The send's
  own deadline still bounds the whole wait.
* Slots that hang free nothing, so their waiters still leave after one budget (or at
  once, when the slow-call verdict releases them): hang detection is unchanged.
* The time queued is kept out of the set-up times the adaptive budget learns, and a send
  that gets its slot after queueing starts its set-up with a whole budget.
* A slot is never left free while a send waits for one: a slot freed in the loop turn
  that ran out every waiter's budget (no live waiter to hand it to) is taken by the
  first of them to get back in line.

asyncio only (the SMTP provider is; the HTTP providers use it on asyncio and leave
httpx's own pool limit to act alone under trio).
"""

from __future__ import annotations

import asyncio
from collections import deque

from .. import _clock
from .._attempt import AttemptContext, current_attempt
from .._errors import TransientError

__all__ = ["Slots"]


class Slots:
    """At most ``size`` holders at once; :meth:`acquire` waits as the module says.

    The waiters queue in arrival order, each on a future that :meth:`release` hands the
    freed slot to directly, with one loop timer per wait for its budget. Not an
    ``asyncio.Semaphore`` under ``asyncio.timeout``: with that pair a wait made a
    ``Timeout``, its rescheduling and a task cancel-and-uncancel on expiry, about 3 us
    more per waiting send (a send waits here about once at 5 connections), and a timed
    out wait needs no cancellation here: its future is failed, not its task.
    """

    def __init__(self, size: int, what: str) -> None:
        self.size = size
        #: what a slot is, for the error ("pooled connection", "connection to 'resend'")
        self._what = what
        #: slots nobody holds nor has been handed
        self._free = size
        #: one future per wait, in arrival order; done ones (timed out, cancelled) are
        #: skipped when a slot is handed on
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: slots freed so far: a waiter that saw this move was queued, not stuck
        self._freed = 0
        #: tasks waiting for a slot now
        self.waiting = 0

    async def acquire(self) -> None:
        """Take a slot; TransientError (nothing was sent, no verdict on the provider) when
        none was freed for a whole budget, or the send's deadline passed."""
        if self._free > 0 and not self._queued():
            self._free -= 1  # free at once: no wait to bound or account
            return
        self.waiting += 1
        try:
            await self._wait()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._freed += 1
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if future.done():
                continue
            try:
                future.set_result(None)  # the slot passes to that waiter as it is
            except RuntimeError:  # its loop is closed: that wait is gone
                continue
            return
        self._free += 1

    def _queued(self) -> bool:
        """Whether a wait is still under way (those timed out or cancelled are dropped)."""
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()
        return bool(waiters)

    async def _take(self, wait: float | None) -> None:
        """Wait in line for a slot, at most ``wait`` seconds (None: no limit); on a
        TimeoutError the place in line is given up."""
        if self._free > 0 and not self._queued():
            # Back in line after a timed-out wait (a slot was freed meanwhile, or the
            # loop's lag moved the budget on) and a slot is free: it is ours. It went
            # free when release() ran in the same loop turn as this wait's timer, after
            # it (a busy loop runs every due timer in one turn): the timer had failed our
            # future, so release() found no live waiter. Queued behind that free slot,
            # nobody would ever hand it to us, and after one more budget the whole
            # queue failed over from a healthy provider.
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        timer = None if wait is None else loop.call_later(wait, _expire, future)
        try:
            await future
        except asyncio.CancelledError:
            # Done in the same turn as the cancellation: a slot handed to us is passed
            # on (a timeout's error is read by exception(), so it is not logged as lost).
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _wait(self) -> None:
        attempt = current_attempt()
        began = _clock.now()
        while True:
            wait = attempt.timeout(None)
            if wait is None:
                await self._take(None)
                break
            freed = self._freed
            try:
                await self._take(wait)
                break
            except TimeoutError:
                if self._freed != freed:
                    # still queued, not hung: the time so far is queueing (it moves a
                    # provider's own deadline on), and the budget starts again
                    now = _clock.now()
                    attempt.queued(now - began)
                    began = now
                    if _progressed(attempt):
                        continue
                elif attempt.extend():
                    continue  # the loop was held up, not the queue stuck: wait on
            # Queued behind our own sends says nothing about the provider's health (the
            # sends holding the slots give that verdict), and another try here would wait
            # in the same queue.
            raise TransientError(
                f"no {self._what} became free within {wait:.3g}s (the attempt's pre-commit "
                f"budget or the send deadline): all {self.size} are busy and none "
                "finished meanwhile",
                no_verdict=True,
                retry_here=False,
            ) from None
        # The slot came after queueing: set-up starts now, with a whole budget (a send
        # that waited nearly a budget must not have to connect in what is left of it),
        # and the wait is not set-up time.
        attempt.queued(_clock.now() - began)
        attempt.progress()


def _expire(future: asyncio.Future[None]) -> None:
    """A wait's budget ran out before a slot was handed to it."""
    if not future.done():
        future.set_exception(TimeoutError())


def _progressed(attempt: AttemptContext) -> bool:
    """Restart the attempt's pre-commit budget; False when the send's own deadline has
    passed too (then waiting longer cannot help)."""
    attempt.progress()
    left = attempt.timeout(None)
    return left is None or left > 0.001
