"""Concurrent sends to one HTTP provider, merged into its batch endpoint.

``Mailer.send_many`` sends each message as an ordinary ``send`` (so routing, breakers,
retries, events and failover stay per message: only the items that failed move on),
and marks those sends as batchable. An HTTP provider with a batch endpoint then holds
each such send for a moment (``WINDOW``, or until ``batch_size`` are waiting) and sends
them together in one request.

The commit point stays per message, with a handshake: when a batch is about to go, the
flusher wakes each waiting send, which crosses its own commit point in its own task (its
attempt's budget, release and the outbox's hooks apply, and an attempt abandoned
meanwhile withdraws), then the request goes with the messages that confirmed. Each send
then gets its own item's outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._attempt import commit_point
from .._errors import DeliveryError, DeliveryUncertain, MessageError
from .._result import SendResult

__all__ = ["WINDOW", "Coalescer", "batching"]

#: how long the first send of a batch waits for others (seconds)
WINDOW = 0.002

#: set by Mailer.send_many for its sends
batching: contextvars.ContextVar[bool] = contextvars.ContextVar("mailer_batching", default=False)

Outcome = SendResult | DeliveryError | MessageError
SendChunk = Callable[[list[tuple[int, Any]]], Awaitable[list[Outcome]]]


@dataclass(eq=False)
class _Item:
    payload: Any
    size: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    result: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Coalescer:
    """One per provider: the sends waiting to go in its next batch."""

    def __init__(self, size: int, send_chunk: SendChunk, max_bytes: int = 0) -> None:
        self._size = size
        self._send_chunk = send_chunk
        #: a batch request's byte limit (0: none)
        self._max_bytes = max_bytes
        self._pending: list[_Item] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, payload: Any, size: int = 0) -> SendResult:
        """Send ``payload`` (``size`` bytes) in the next batch; its own outcome."""
        if self._max_bytes and self._pending and self._pending_bytes + size > self._max_bytes:
            self._flush()  # this one would not fit: the batch so far goes now
        item = _Item(payload, size)
        self._pending.append(item)
        self._pending_bytes += size
        if len(self._pending) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WINDOW, self._flush)
        try:
            await item.ready.wait()
        except BaseException:
            if item in self._pending:  # abandoned before its batch formed: just leave
                self._pending.remove(item)
                self._pending_bytes -= item.size
            elif not item.go.done():
                item.go.set_result(False)
            raise
        try:
            await commit_point()  # raises when the attempt was abandoned meanwhile
        except BaseException:
            item.go.set_result(False)
            raise
        item.go.set_result(True)
        outcome = await item.result
        if isinstance(outcome, SendResult):
            return outcome
        raise outcome

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._pending = self._pending[: self._size], self._pending[self._size :]
        self._pending_bytes = sum(item.size for item in self._pending)
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(WINDOW, self._flush)
        if items:
            task = asyncio.get_running_loop().create_task(self._run(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[_Item]) -> None:
        for item in items:
            item.ready.set()
        confirmed = [item for item in items if await item.go]
        if not confirmed:
            return
        try:
            outcomes = await self._send_chunk(
                [(i, item.payload) for i, item in enumerate(confirmed)]
            )
        except BaseException as exc:  # we cannot know what was sent
            text = f"batch request failed: {type(exc).__name__}: {exc}"
            outcomes = [DeliveryUncertain(text) for _ in confirmed]  # one each: sends annotate
            if not isinstance(exc, Exception):
                for item, outcome in zip(confirmed, outcomes, strict=True):
                    if not item.result.done():
                        item.result.set_result(outcome)
                raise
        for item, outcome in zip(confirmed, outcomes, strict=True):
            if not item.result.done():
                item.result.set_result(outcome)
