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
from collections.abc import Callable

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
    ``timeout``), whichever comes first, and returns the last check.
    """
    deadline = time.monotonic() + timeout
    budget = polls if polls is not None else max(1, int(timeout / interval) + 1)
    for _ in range(budget):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return bool(predicate())


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 3.0,
    *,
    interval: float = 0.02,
    polls: int | None = None,
) -> bool:
    """:func:`wait_until` for async tests: sleeps with anyio, so the loop keeps running."""
    deadline = time.monotonic() + timeout
    budget = polls if polls is not None else max(1, int(timeout / interval) + 1)
    for _ in range(budget):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        await anyio.sleep(interval)
    return bool(predicate())
