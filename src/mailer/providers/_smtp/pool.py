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

from ..._errors import TransientError
from .._slots import Slots
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
        #: at most max_connections sends hold a connection; waiting is queueing (slots.py)
        self._slots = Slots(max_connections, "pooled connection")
        self._max_messages = max_messages
        self._idle_timeout = idle_timeout
        self._idle: list[Connection] = []
        self._leased: set[Connection] = set()
        self._closed = False
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
        await self._slots.acquire()
        slot = _Slot(self._slots)
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

    async def _use(
        self, conn: Connection, job: Callable[[Connection], Awaitable[_T]], slot: _Slot
    ) -> _T:
        self._leased.add(conn)
        handed = False

        def handoff() -> None:
            nonlocal handed
            # a hand-off is only worth it when a send is waiting
            if self._slots.waiting and not self._closed and conn.messages < self._max_messages:
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
        idle = self._idle
        if not fresh and len(idle) > 1:
            # Several hand-offs in one loop turn woke their waiters in that order, and each
            # connection's held payload is flushed right after its own waiter's turn. The
            # most recent connection (the rule below) would pair the first waiter with
            # the last hand-off: the first connections' payloads then left alone and
            # their groups after them, two writes instead of one for ~40 % of messages at
            # 5 connections. So the earliest connection still holding goes first.
            for index, conn in enumerate(idle):
                if conn.holding:
                    if index != len(idle) - 1:
                        idle.append(idle.pop(index))
                    break
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
    """One send's hold on a slot, released once (early, at a hand-off)."""

    __slots__ = ("_slots", "released")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots.release()
