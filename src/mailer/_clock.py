"""The one clock that breakers, attempt deadlines, budgets and rate limits read.

Each of them used to read ``time.monotonic()`` (or an injected callable) on its own, so
a test that wanted to move time had to patch three places and keep them in step. They
all call :func:`now` instead, and :class:`FakeClock` replaces what it returns for all of
them at once.

The seam is one module-level function that reads one global: a call costs about what
``time.monotonic()`` does plus a Python frame, which matters because deadlines and
budgets are read several times per send. Event-loop timers (the budget's asyncio timer,
``anyio.sleep``) keep running on the loop's own clock: a fake clock moves the verdicts
(breakers, budgets, deadlines, rate slots), not the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["FakeClock", "now"]

_source: Callable[[], float] = time.monotonic


def now() -> float:
    """Seconds on the monotonic clock (or the installed :class:`FakeClock`)."""
    return _source()


class FakeClock:
    """A clock that moves only when told to; install it with ``with FakeClock() as c``.

    While installed, every reader of :func:`now` sees ``c.now``; :meth:`advance` (or
    ``c.now += s``) moves it. It is also a plain callable, for APIs that take a clock
    (``Mailer(clock=...)``, ``Gcra``) without installing it. By default it starts at the
    real monotonic time, so that deadlines computed before it was installed stay
    meaningful.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start
        self._previous: Callable[[], float] | None = None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __enter__(self) -> FakeClock:
        global _source
        self._previous, _source = _source, self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _source
        assert self._previous is not None
        _source, self._previous = self._previous, None
