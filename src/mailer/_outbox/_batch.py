"""Client-side group commit: concurrent writes sent to the database as one statement.

A worker sending 16 messages at once has several commit-point records and results
waiting for the database at any moment. One statement each costs the server a round
trip, a transaction and a WAL flush apiece, and each commit-point record is awaited
while its attempt holds a pooled SMTP connection. A :class:`Batcher` sends a write at
once when no write is in flight (so a lone write is never delayed), and otherwise
collects the writes that arrive meanwhile and sends them together as soon as the one in
flight returns. Measured against one statement per write and against two or three
statements in flight, one in flight was the fastest (docs/benchmarks.md#outbox): on a
busy machine the server's cost per statement is what the attempts wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await batcher.submit(item)``: ``item``'s result from ``write``.

    ``write(items)`` runs one statement for all ``items`` and returns one result per
    item, in order (for a write: whether its row's claim still matched). At most one
    ``write`` is in flight; it runs in its own task, so a caller cancelled while waiting
    does not cancel the statement for the others (its own write may still be applied,
    as when a cancellation arrives after a statement was sent).

    A batch whose statement fails is written again one item at a time, so one bad item
    (or a connection lost mid-batch) fails only itself, as it would without batching.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        limit: int = 256,
    ) -> None:
        self._write = write
        self._limit = limit
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._limit]
                del self._pending[: self._limit]
                try:
                    await self._send(batch)
                except BaseException:  # cancelled: the store is closing under us
                    for _, future in batch:
                        future.cancel()
                    raise
        finally:
            self._task = None
            for _, future in self._pending:  # only left when cancelled
                if not future.done():
                    future.set_exception(RuntimeError("the outbox store was closed"))
            self._pending.clear()

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for one in batch:
                await self._send([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the writes already submitted (a closing store finishes them)."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
