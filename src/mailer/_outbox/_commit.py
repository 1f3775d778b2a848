"""The outbox's commit hook: the claim-bound commit-point record of one claimed message.

Before any attempt of the message crosses its commit point, the row must say, durably,
``committed`` (and under which provider): a worker killed after that may have delivered
the message, so the row goes to ``unknown``, never back to ``queued``. That record is a
database write, and an SMTP connection waiting for it idles between DATA's 354 and the
payload (about a millisecond a message, most of the outbox's gap to sending directly).

So the write starts early: :meth:`CommitRecord.prepare` is called by the attempt layer
when the provider starts the message's attempt (SMTP: before it waits for a pooled
connection and sends MAIL, RCPT and DATA; see
:meth:`mailer._attempt.AttemptContext.prepare`), and the hook proper, awaited at the
commit point, only waits for that write. Nothing crosses before it is durable and
confirmed (its claim still held): the never-twice guarantee is where it was.

Why an early record is harmless for an attempt that never reaches its commit point:

* **The worker lives.** What it records next comes from :attr:`crossed`, which only the
  hook at the commit point sets, and not from the row's flag: :func:`.worker.decide` sees
  the same ``crossed`` as before, and the result overwrites the row (``queued`` again
  with backoff, ``failed``...). The next claim resets ``committed``.
* **The worker dies.** The lease expires with ``committed`` set, so the row goes to
  ``unknown`` (may have been delivered), where before it went back to ``queued`` when the
  worker died between the start of the attempt and the commit point (the pool wait,
  MAIL, RCPT, DATA). The outcome is on the safe side (never sent twice), at the price
  of an operator's look at a message that in fact was not sent; a worker killed before
  the provider starts (claimed, or routing) still leaves its rows ``queued``.
* **Late writes.** Each write is bound to the claim and to ``state = 'sending'``, so one
  landing after the result (or after another worker's claim) changes nothing. The worker
  still waits for every early write before writing its result (:meth:`settled`): the
  Postgres store groups writes into one statement, which must not hold a record and a
  result for the same row.

**The record made by the claim** (``Claimed.committed``, the worker's default when every
claimed send starts at once: ``OutboxConfig.commit_record``). The claim's own
transaction marks its rows ``committed``, durably, so there is no write per message at
all: :meth:`prepare` does nothing and the hook only checks that the claim is still held,
against the lease as the worker knows it (``held``: its own clock, from when the claim
or the last heartbeat's renew was *sent*, plus the lease, minus a margin), without a
round trip. What that check guards is narrow: a lease that expires on a row marked
``committed`` ends in ``unknown``, never ``queued``, so no other worker can claim the row
and send it again whether or not this worker crosses; the check keeps a worker that lost
its heartbeat from crossing after an operator may have re-queued the row by hand. The
price is the crash window: a worker killed between the claim and its attempts leaves
those rows ``unknown`` instead of ``queued`` (docs/design-notes.md, "One durable write
per claim").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._attempt import AttemptContext, attached, current_attempt
from .._errors import TransientError
from .store import Claimed, OutboxStore

__all__ = ["CommitRecord"]


class CommitRecord:
    """``with commit_hooks(record): ...``: one claimed message's commit-point record."""

    __slots__ = ("_early", "_held", "_store", "_writes", "crossed", "item")

    def __init__(
        self, store: OutboxStore, item: Claimed, held: Callable[[], bool] | None = None
    ) -> None:
        self._store = store
        self.item = item
        #: the worker's view of its lease on the row (for a claim that recorded the
        #: commit point); None: no view, the row's own write decides
        self._held = held
        #: an attempt of this send recorded crossing its commit point
        self.crossed = False
        #: the record started by prepare(), and for which attempt
        self._early: tuple[AttemptContext, asyncio.Task[bool]] | None = None
        #: every write started early (awaited before the result is written)
        self._writes: list[asyncio.Task[bool]] = []

    def _mark(self, attempt: AttemptContext) -> asyncio.Task[bool]:
        provider = attempt.provider if attached(attempt) else None
        task = asyncio.ensure_future(
            self._store.mark_committing(self.item.row, self.item.claim, provider)
        )
        task.add_done_callback(_retrieve)
        return task

    def prepare(self) -> None:
        """Start the record for the current attempt (not awaited here); nothing when
        the claim recorded it."""
        if self.item.committed:
            return
        attempt = current_attempt()
        task = self._mark(attempt)
        self._early = (attempt, task)
        self._writes.append(task)

    def ready(self) -> bool:
        """At the commit point, without waiting (:class:`mailer._attempt.ReadyHook`):
        True when the record is durable and the claim held (the attempt may cross), False
        when the hook must be awaited; raises when the attempt must not cross."""
        if self.item.committed:
            # Recorded, durably, by the claim itself: only the lease is left to check.
            if self._held is not None and not self._held():
                raise TransientError(
                    "this worker's lease on the message may have expired (its heartbeat "
                    "was not renewed in time): not sending"
                )
            self.crossed = True
            return True
        early = self._early
        if early is None or early[0] is not current_attempt() or not early[1].done():
            return False
        task = early[1]
        if task.cancelled() or task.exception() is not None or not task.result():
            return False  # the awaited path words the refusal
        self._early = None
        self.crossed = True
        return True

    async def __call__(self) -> None:
        """At the commit point: the record is durable and the claim held, or raise."""
        if self.ready():
            return
        attempt = current_attempt()
        early, self._early = self._early, None
        try:
            if early is not None and early[0] is attempt:
                ok = await early[1]
            else:  # not prepared (a provider that does not announce its commit point)
                ok = await self._store.mark_committing(
                    self.item.row, self.item.claim, attempt.provider if attached(attempt) else None
                )
        except Exception as exc:
            raise TransientError(
                f"the outbox could not record the commit point ({exc!r}): not sending"
            ) from exc
        if not ok:
            raise TransientError(
                "this worker's claim on the message expired (another worker may hold "
                "it now): not sending"
            )
        self.crossed = True

    @property
    def pending(self) -> bool:
        """Some record started early may still be in flight (see :meth:`settled`)."""
        return any(not task.done() for task in self._writes)

    async def settled(self) -> None:
        """Wait for the records started early (their outcome does not matter here)."""
        writes, self._writes = self._writes, []
        pending = [task for task in writes if not task.done()]
        if pending:
            await asyncio.wait(pending)


def _retrieve(task: asyncio.Future[bool]) -> None:
    """Consume an early record's error when no commit point awaited it."""
    if not task.cancelled():
        task.exception()
