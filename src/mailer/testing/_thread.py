"""An asyncio event loop of its own, in a thread: for servers that must answer on time
while the caller's loop cannot run them.

The kit's asyncio servers (:class:`~mailer.testing.HTTPTestServer`,
:class:`~mailer.testing.FakeResend`, :class:`~mailer.testing.SMTPSink`) normally run on
the test's own loop. That loop is not always free: a test that holds it with CPU work (a
starved loop must not look like a hung provider), a test on trio, a synchronous test
talking through a blocking client, other processes sending to the server. Each then
needs the server on a loop that keeps running: :func:`in_thread` starts one for it.

Everything is bounded: starting and stopping wait at most ``timeout`` seconds each, and
the thread is a daemon, so a test that fails half-way never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["LoopThread", "in_thread"]

T = TypeVar("T")


class _AsyncServer(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


S = TypeVar("S", bound=_AsyncServer)


class LoopThread:
    """An asyncio loop running in a daemon thread; :meth:`run` runs a coroutine on it
    from any other thread and returns its result (or raises its error)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="mailer-testing-loop", daemon=True
        )

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the thread's loop; wait at most ``timeout`` (the default
        given at construction) for it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(self.timeout if timeout is None else timeout)

    def stop(self) -> None:
        """Stop the loop, join the thread (bounded) and close the loop."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self.timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> LoopThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def in_thread(server: S, *, timeout: float = 10.0) -> Iterator[S]:
    """Start ``server`` (any kit server with ``async start()`` and ``async stop()``) on a
    :class:`LoopThread` of its own, yield it, and stop both on exit.

    ``with in_thread(FakeResend()) as api: ...`` leaves the caller's thread and loop free:
    read what the server received (``api.log``, ``api.received``) as usual. Its async
    methods belong to the thread's loop: to await more than start and stop, use a
    :class:`LoopThread` and its :meth:`~LoopThread.run`."""
    with LoopThread(timeout=timeout) as runner:
        runner.run(server.start())
        try:
            yield server
        finally:
            runner.run(server.stop())
