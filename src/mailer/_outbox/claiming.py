"""The worker's run: claiming due rows for free slots, sending them, and its heartbeat.

One :class:`Worker` is one run of :meth:`.worker.Outbox.drain` or
:meth:`~.worker.Outbox.run` (a ``mailer worker`` process). It keeps at most
``concurrency`` sends of claimed rows under way, claims more in one transaction when
enough slots are free (:func:`shape`), and keeps its own view of the lease on every
claim it holds, for the commit-point check of a claim that recorded the commit point
(:mod:`._commit`).

**How many sends, and when to claim.** The drain is only as fast as the pooled
connections are kept busy: a connection writes the commands of every send waiting on it
in one ``write()``, so with too few sends under way each message costs more syscalls and
loop wake-ups (1.5 writes a message at 16 sends against 1.03 sending directly;
docs/benchmarks.md, "The drain at its default concurrency"). The Mailer's admission gate admits
:data:`~mailer._routing.admission.PER_SLOT` sends per connection slot; what keeps it full
is a worker that still holds more sends than the gate admits *while its next claim is
in flight* (a durable write: an fsync or a round trip, milliseconds under load). So
``concurrency = "auto"`` is three times the gate's capacity, and a claim starts as soon
as half of what is held beyond the gate is free: one gate's worth admitted, one waiting
behind it while the next claim is in flight (the buffer that covers the claim's
latency), one being claimed. Twice the gate's capacity measured a gate less full (15-16
of 20 admitted on average against 17-18) and claims of 13-15 rows against 22-24
(docs/benchmarks.md, "The drain at its default concurrency"). Sends beyond that only
wait at the gate, and with the claim's own commit-point record every row held is one a
SIGKILL leaves ``unknown``, so ``auto`` stops there (docs/outbox.md, "What a SIGKILL
leaves, and how many").
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .._log import get_logger
from .store import Claimed, OutboxStore

if TYPE_CHECKING:
    from .worker import Outbox

__all__ = ["AUTO_FACTOR", "AUTO_MAX", "AUTO_MIN", "AUTO_NO_GATE", "Worker", "shape"]

log = get_logger("mailer.outbox")

#: ``concurrency = "auto"``: this many times what the Mailer's admission gate admits
AUTO_FACTOR = 3
#: ``concurrency = "auto"``: never fewer sends than this (a small pool still needs a
#: buffer of claimed sends to cover the claim's latency), nor more than AUTO_MAX
AUTO_MIN = 16
AUTO_MAX = 256
#: ``concurrency = "auto"`` when the Mailer has no admission gate (a provider without a
#: bounded connection count, or one paced by a rate limit): the old fixed default
AUTO_NO_GATE = 16


def shape(concurrency: int | Literal["auto"], capacity: int | None) -> tuple[int, int]:
    """``(concurrency, batch)``: the sends a worker keeps under way at most, and how many
    slots must be free before it claims again.

    ``capacity``: how many sends the Mailer's admission gate admits at once (None: no
    gate). ``auto`` is AUTO_FACTOR times that, within [AUTO_MIN, AUTO_MAX], or
    AUTO_NO_GATE without a gate. Above the gate's capacity, a claim starts when half of
    the sends held beyond it are free, so the gate stays full while the claim is in
    flight; at or below it (or without a gate), when half of all slots are (fewer,
    larger claims: each is a durable write and a wake-up of the loop).
    """
    if concurrency != "auto":
        sends = concurrency
    elif capacity is None:
        sends = AUTO_NO_GATE
    else:
        sends = min(max(AUTO_FACTOR * capacity, AUTO_MIN), AUTO_MAX)
    if capacity is not None and sends > capacity:
        return sends, max(1, (sends - capacity) // 2)
    return sends, max(1, sends // 2)


#: the share of the lease the commit-point check keeps off its end (see Worker._renew)
_LEASE_MARGIN = 0.1


class Worker:
    """One run of claiming and sending, with its heartbeat (drain, or a worker process)."""

    def __init__(self, outbox: Outbox, concurrency: int | Literal["auto"]) -> None:
        self.outbox = outbox
        #: sends under way at most, and the free slots that start a claim (see shape)
        self.concurrency, self.batch = shape(concurrency, outbox.capacity)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.inflight = 0
        #: outcomes being written (their slots are already free)
        self.recording = 0
        self.counts: Counter[str] = Counter()
        self._wake = anyio.Event()
        #: claims record the commit point (see Outbox.commit_at_claim)
        self.commit = outbox.commit_at_claim
        lease = outbox.config.lease
        #: kept off the lease's end by the commit-point check (clocks, a late statement)
        self._margin = lease * _LEASE_MARGIN
        #: claim -> until when (time.monotonic()) its lease surely holds, by this
        #: worker's own clock: from when the claim, or a renew that covered it, was sent
        #: (by claim, not row: a row queued again may be claimed anew before the last
        #: claim's task has let go of it)
        self._held: dict[str, float] = {}

    def _holds(self, claim: str) -> Callable[[], bool]:
        return lambda: self._held.get(claim, -math.inf) > time.monotonic()

    async def _renew(self, store: OutboxStore, lease: float) -> None:
        """The heartbeat's renew, and what it proves about the rows this worker holds.

        A renew extends every row the owner holds in ``sending`` when it runs. A row
        whose lease had not expired by then is extended: that is sure for each row whose
        known end (margin off) was past the send time, when the answer came back within
        the margin (it ran before the send time plus the margin). A slower answer
        extends nothing here: the rows keep the end their claim gave them.
        """
        claims = list(self._held)
        sent = time.monotonic()
        await store.renew(self.owner, lease=lease)
        if time.monotonic() - sent < self._margin:
            until = sent + lease - self._margin
            held = self._held
            for claim in claims:
                end = held.get(claim)
                if end is not None and end > sent:
                    held[claim] = max(end, until)

    def _poke(self) -> None:
        self._wake.set()

    async def _wait(self, seconds: float) -> None:
        with anyio.move_on_after(max(seconds, 0.0)):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def run(
        self, *, until_idle: bool, timeout: float | None = None, stop: anyio.Event | None = None
    ) -> dict[str, int]:
        outbox, config = self.outbox, self.outbox.config
        store = await outbox._ready()
        deadline = None if timeout is None else time.monotonic() + timeout

        def stopping() -> bool:
            if stop is not None and stop.is_set():
                return True
            return deadline is not None and time.monotonic() >= deadline

        async def one(item: Claimed) -> None:
            recording = False
            try:
                outcome = await outbox._attempt(
                    store, item, self._holds(item.claim) if item.committed else None
                )
                self.counts[outcome.state] += 1
                # The slot is free once the send is over: the outcome's commit need not
                # hold it (the lease covers the row until then).
                self.recording += 1
                recording = True
            finally:
                self.inflight -= 1
                # Wake the claiming loop only when it would act: a batch of slots is
                # free, or nothing is in flight (see its test below), not per send.
                if self.inflight == 0 or self.concurrency - self.inflight >= self.batch:
                    self._poke()
            # From here on this send is not cancelled (see _Sends.cancel): its outcome
            # is written whatever stops the worker meanwhile.
            task = sends.recording()
            try:
                await outbox._record(store, item, outcome, shield=False)
            finally:
                sends.recorded(task)
                self._held.pop(item.claim, None)
                if recording:
                    self.recording -= 1
                    if self.inflight == 0 and self.recording == 0:  # maybe idle now
                        self._poke()

        async def heartbeat() -> None:
            while True:
                await anyio.sleep(config.lease / 3)
                try:
                    await self._renew(store, config.lease)
                except Exception:
                    log.exception("outbox heartbeat failed (the lease may expire)")

        async def watch_stop() -> None:
            assert stop is not None
            await stop.wait()
            self._poke()

        async with anyio.create_task_group() as beats:
            beats.start_soon(heartbeat)
            if stop is not None:
                beats.start_soon(watch_stop)
            sends = _Sends(self._poke)
            try:
                while not stopping() and sends.error is None:
                    free = self.concurrency - self.inflight
                    # Claim in batches (one transaction for several messages) unless
                    # idle: when ``batch`` slots are free (see shape), so that each
                    # claim, a durable write, a writer hand-over and a wake-up of this
                    # loop, is shared by several messages while the sends still held
                    # keep the providers busy.
                    if free <= 0 or (self.inflight and free < self.batch):
                        await self._wait(config.poll_interval)
                        continue
                    try:
                        sent = time.monotonic()
                        claimed = await store.claim(
                            self.owner,
                            free,
                            lease=config.lease,
                            max_age=config.max_age,
                            commit=self.commit,
                        )
                    except Exception:
                        log.exception("outbox claim failed; trying again")
                        await self._wait(config.poll_interval)
                        continue
                    until = sent + config.lease - self._margin
                    for item in claimed:
                        self.inflight += 1
                        self._held[item.claim] = until
                        sends.start(one(item))
                    if claimed:
                        continue
                    wait = config.poll_interval
                    if until_idle and self.inflight == 0 and self.recording == 0:
                        # Idle. Without a timeout, done; with one, wait for what comes
                        # due before it passes (a retry after backoff), if anything.
                        due = await store.next_due()
                        if due is None or deadline is None:
                            break
                        until_due = due - time.time()
                        if until_due >= deadline - time.monotonic():
                            break
                        wait = min(wait, until_due)
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    await self._wait(wait)
                if sends.error is None:
                    await sends.join()
            except BaseException:
                await sends.cancel()
                raise
            if sends.error is not None:
                await sends.cancel()  # the others, as a task group would
                raise sends.error
            beats.cancel_scope.cancel()
        return dict(self.counts)


class _Sends:
    """The sends under way, one asyncio task each, awaited as a task group would be.

    Not an anyio task group: starting a task in one, and running it, costs about 25 µs
    more than an asyncio task (its own cancel scope, name and status bookkeeping), and
    the drain starts one per message (docs/benchmarks.md, "The SQLite drain's own
    work"). The outbox runs on asyncio only (its database drivers are), and what the
    group gave is kept here: :meth:`join` waits for every send, a send that fails
    (a bug: an attempt's errors are outcomes) stops the worker with its error, and
    :meth:`cancel` (the worker itself cancelled) cancels the sends under way and waits
    for them; a send already writing its outcome is not cancelled but waited for.
    """

    def __init__(self, poke: Callable[[], None]) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        #: sends writing their outcome: :meth:`cancel` waits for them, not cancelling
        #: them (an anyio shield would not stop ``task.cancel()``: it only stops anyio's
        #: own scopes, and these tasks are in none)
        self._recording: set[asyncio.Task[Any]] = set()
        #: the first error a send ended with (the worker raises it)
        self.error: BaseException | None = None
        self._poke = poke

    def start(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(send)
        self.tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and self.error is None:
            self.error = error
            self._poke()

    async def join(self) -> None:
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    def recording(self) -> asyncio.Task[Any] | None:
        """The calling send starts writing its outcome: not cancelled from now on."""
        task = asyncio.current_task()
        if task is not None:
            self._recording.add(task)
        return task

    def recorded(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._recording.discard(task)

    async def cancel(self) -> None:
        with anyio.CancelScope(shield=True):
            for task in self.tasks:
                if task not in self._recording:
                    task.cancel()
            while self.tasks:
                await asyncio.wait(set(self.tasks))
