"""The one polling helper: wait for state another thread or task will change.

Servers in the kit run in their own thread or task, so a test that asserts on what they
saw right after the client returned can race them. Both helpers are bounded twice, by
``timeout`` seconds and by ``polls`` checks, so a predicate that is slow to evaluate (a
ledger file read, a Redis round trip) cannot stretch a test beyond its budget either.
Both return the predicate's last verdict instead of raising: the caller's ``assert``
says what was expected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import anyio

__all__ = ["eventually", "wait_until"]


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 2.0,
    *,
    interval: float = 0.01,
    polls: int | None = None,
) -> bool:
    """Poll ``predicate()`` every ``interval`` seconds until it is true; blocking.

    Gives up after ``timeout`` seconds or ``polls`` checks (default: as many as fit in
    ``timeout``), whichever comes first: False when no check was true.
    """
    deadline = time.monotonic() + timeout
    for last in _checks(timeout, interval, polls):
        if predicate():
            return True
        if last or time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return False


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 3.0,
    *,
    interval: float = 0.02,
    polls: int | None = None,
) -> bool:
    """:func:`wait_until` for async tests: sleeps with anyio, so the loop keeps running."""
    deadline = time.monotonic() + timeout
    for last in _checks(timeout, interval, polls):
        if predicate():
            return True
        if last or time.monotonic() >= deadline:
            return False
        await anyio.sleep(interval)
    return False


def _checks(timeout: float, interval: float, polls: int | None) -> Iterator[bool]:
    """One item per allowed check, True for the last: ``polls``, or as many as fit."""
    budget = polls if polls is not None else max(1, int(timeout / interval) + 1)
    for n in range(budget):
        yield n == budget - 1
