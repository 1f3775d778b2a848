"""A bounded pool of SMTP sessions, made lazily and retired politely.

Invariant: open connections (idle + leased) never exceed ``max_connections``. A task
takes a slot from the semaphore first, then reuses an idle connection or, only when
there is none, opens one; a connection goes back to the idle list as its slot is freed.
So the count of connections can only grow by a task that holds a slot and found no idle
connection: never past the number of slots.

Reuse is where pooled SMTP loses mail in other clients: the server closed the session
while it sat idle (its own idle timeout, a 421 at shutdown), and the next message fails
on it. Here a connection that is visibly closed is dropped before use, one idle longer
than ``idle_timeout`` is retired, and one that fails before MAIL was accepted
(:class:`.connection.ConnectionStale`) is replaced once, transparently: nothing of the
message had been sent, so retrying it cannot duplicate.

With PIPELINING, a connection is handed to the next waiting send as soon as the current
one has written its final "." (:attr:`.connection.Connection.on_handoff`): the next
message's MAIL/RCPT/DATA leave right behind the payload, and its replies are read after
the first message's verdict. One round trip per message while sends queue, instead of
two. The first send gives its slot back at that moment (it only reads its verdict from
then on), so the count of open connections is still bounded by the slots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ...errors import TransientError
from ...provider import deadline_remaining
from ...routing.attempt import attempt_progress, attempt_queued
from .connection import Connection, ConnectionStale

__all__ = ["Pool"]

_T = TypeVar("_T")


class Pool:
    """Connections to one server, shared by the sends of one provider."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        *,
        max_connections: int,
        max_messages: int,
        idle_timeout: float,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_connections)
        self._max_connections = max_connections
        self._max_messages = max_messages
        self._idle_timeout = idle_timeout
        self._idle: list[Connection] = []
        self._leased: set[Connection] = set()
        self._closed = False
        #: sends waiting for a slot (a hand-off is only worth it when one is)
        self._waiting = 0
        #: slots freed so far: a waiter that saw this move was queued, not stuck
        self._freed = 0
        #: connections opened so far (for metrics and tests)
        self.opened = 0
        #: sends whose group followed the previous send's payload (for metrics and tests)
        self.handoffs = 0

    @property
    def size(self) -> int:
        """Connections currently open (idle + leased)."""
        return len(self._idle) + len(self._leased)

    async def run(self, job: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run ``job`` on a pooled connection; retry once when a reused one was stale."""
        if self._closed:
            raise TransientError("the SMTP provider was closed")
        self._waiting += 1
        try:
            await self._wait_for_slot()
        finally:
            self._waiting -= 1
        slot = _Slot(self)
        try:
            conn, reused = await self._take(fresh=False)
            try:
                return await self._use(conn, job, slot)
            except ConnectionStale:
                if not reused or self._closed or slot.released:
                    raise
            # The server dropped a session while it was idle: open a new one.
            conn, _ = await self._take(fresh=True)
            return await self._use(conn, job, slot)
        finally:
            slot.release()

    async def _wait_for_slot(self) -> None:
        """Take a slot, waiting at most one pre-commit budget *without progress*.

        Queued behind our own sends is not a hang: while the pool keeps freeing slots
        (sends finishing, hand-offs), the wait tells the attempt it is progressing, which
        restarts its budget, as each RCPT answer does in a long envelope. So 10,000 sends
        queued on 5 connections all go out (bounded by the send's deadline), while a pool
        whose connections all hang frees nothing and its waiters fail over after one
        budget, or sooner when the slow-call verdict releases them.
        """
        if not self._slots.locked():
            await self._slots.acquire()  # free at once: no wait to bound or account
            return
        began = time.monotonic()
        while True:
            wait = deadline_remaining(None)
            if wait is None:
                await self._slots.acquire()
                _queued_for(time.monotonic() - began)
                return
            freed = self._freed
            try:
                # asyncio.timeout, not wait_for: no extra Task per waiting send (with
                # thousands queued on one connection, that cost showed in throughput)
                async with asyncio.timeout(wait):
                    await self._slots.acquire()
                _queued_for(time.monotonic() - began)
                return
            except TimeoutError:
                if self._freed != freed and _progressed():
                    continue  # the pool moved on meanwhile: still queued, not hung
            # Nothing of the message was sent: transient, so the Mailer fails over.
            # Queued behind our own sends says nothing about the server's health (the
            # sends holding the connections give that verdict).
            busy = TransientError(
                f"no pooled connection became free within {wait:.3g}s (the attempt's "
                f"pre-commit budget or the send deadline): all {self._max_connections} "
                "are busy and none finished meanwhile"
            )
            busy.no_verdict = True
            busy.retry_here = False
            raise busy from None

    async def _use(
        self, conn: Connection, job: Callable[[Connection], Awaitable[_T]], slot: _Slot
    ) -> _T:
        self._leased.add(conn)
        handed = False

        def handoff() -> None:
            nonlocal handed
            if self._waiting and not self._closed and conn.messages < self._max_messages:
                handed = True
                self.handoffs += 1
                self._leased.discard(conn)
                self._idle.append(conn)
                slot.release()

        conn.on_handoff = handoff
        try:
            result = await job(conn)
        except BaseException:
            if conn.on_handoff is handoff:  # not the next send's
                conn.on_handoff = None
            if not handed:
                self._leased.discard(conn)
                if conn.usable and not self._closed and conn.messages < self._max_messages:
                    self._idle.append(conn)
                else:
                    conn.discard()
            raise
        if conn.on_handoff is handoff:  # not the next send's
            conn.on_handoff = None
        if handed:
            if self._closed and conn in self._idle:  # aclose() left it for us
                self._idle.remove(conn)
                await conn.quit()
            return result
        self._leased.discard(conn)
        if conn.usable and not self._closed and conn.messages < self._max_messages:
            self._idle.append(conn)
        else:
            await conn.quit()  # recycled after max_messages, or the pool is closing
        return result

    async def _take(self, *, fresh: bool) -> tuple[Connection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()  # most recently used first: the likeliest alive
            if not conn.usable:
                conn.discard()
                continue
            if time.monotonic() - conn.last_used > self._idle_timeout:
                await conn.quit()
                continue
            return conn, True
        conn = await self._connect()
        self.opened += 1
        return conn, False

    async def aclose(self) -> None:
        """QUIT idle connections; leased ones are closed as their sends finish."""
        self._closed = True
        # A connection still reading a handed-off send's verdict is closed by that send.
        idle = [conn for conn in self._idle if not conn.busy]
        self._idle = [conn for conn in self._idle if conn.busy]
        if idle:
            await asyncio.gather(*(conn.quit() for conn in idle), return_exceptions=True)


class _Slot:
    """One send's hold on the semaphore, released once (early, at a hand-off)."""

    __slots__ = ("_pool", "released")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._pool._freed += 1
            self._pool._slots.release()


def _queued_for(seconds: float) -> None:
    """A slot came after queueing: the attempt's set-up starts now, with a whole budget
    (a send that waited nearly a budget must not have to connect in what is left, and
    a timeout there would read as a hung server), and the wait is not set-up time."""
    attempt_queued(seconds)
    attempt_progress()


def _progressed() -> bool:
    """Restart the attempt's pre-commit budget; False when the send's own deadline has
    passed too (then waiting longer cannot help)."""
    attempt_progress()
    left = deadline_remaining(None)
    return left is None or left > 0.001
