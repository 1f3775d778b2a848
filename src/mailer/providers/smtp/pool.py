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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ...errors import TransientError
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
        self._max_messages = max_messages
        self._idle_timeout = idle_timeout
        self._idle: list[Connection] = []
        self._leased: set[Connection] = set()
        self._closed = False
        #: connections opened so far (for metrics and tests)
        self.opened = 0

    @property
    def size(self) -> int:
        """Connections currently open (idle + leased)."""
        return len(self._idle) + len(self._leased)

    async def run(self, job: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run ``job`` on a pooled connection; retry once when a reused one was stale."""
        if self._closed:
            raise TransientError("the SMTP provider was closed")
        async with self._slots:
            conn, reused = await self._take(fresh=False)
            try:
                return await self._use(conn, job)
            except ConnectionStale:
                if not reused or self._closed:
                    raise
            # The server dropped a session while it was idle: open a new one.
            conn, _ = await self._take(fresh=True)
            return await self._use(conn, job)

    async def _use(self, conn: Connection, job: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._leased.add(conn)
        try:
            result = await job(conn)
        except BaseException:
            self._leased.discard(conn)
            if conn.usable and not self._closed and conn.messages < self._max_messages:
                self._idle.append(conn)
            else:
                conn.abort()
            raise
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
                conn.abort()
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
        idle, self._idle = self._idle, []
        if idle:
            await asyncio.gather(*(conn.quit() for conn in idle), return_exceptions=True)
