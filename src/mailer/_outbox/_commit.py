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
"""

from __future__ import annotations

import asyncio

from .._attempt import AttemptContext, attached, current_attempt
from .._errors import TransientError
from .store import Claimed, OutboxStore

__all__ = ["CommitRecord"]


class CommitRecord:
    """``with commit_hooks(record): ...``: one claimed message's commit-point record."""

    __slots__ = ("_early", "_store", "_writes", "crossed", "item")

    def __init__(self, store: OutboxStore, item: Claimed) -> None:
        self._store = store
        self.item = item
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
        """Start the record for the current attempt (not awaited here)."""
        attempt = current_attempt()
        task = self._mark(attempt)
        self._early = (attempt, task)
        self._writes.append(task)

    async def __call__(self) -> None:
        """At the commit point: the record is durable and the claim held, or raise."""
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
