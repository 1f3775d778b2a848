"""A provider's own suppression list, as ``mailer suppression sync`` imports it.

Each ESP keeps its own list of addresses it will not send to (hard bounces, complaints,
unsubscribes). Our list is one for every provider, so an address one ESP learned about
must not be mailed through another after a failover. An adapter that can list its ESP's
entries returns them page by page from :meth:`HTTPProvider.suppressions`, each as a
:class:`Listed` in our vocabulary: ``kind`` is one of the ``suppression.on`` keys
(``bounced:hard``, ``complained``, ``unsubscribed``), ``detail`` names the ESP's list and
its own reason, for a person reading the entry later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

__all__ = ["MAX_PAGES", "Kind", "Listed", "epoch"]

Kind = Literal["bounced:hard", "complained", "unsubscribed"]

#: pages read from one list at most: a bound on the loop (at 1,000 a page, ten million)
MAX_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class Listed:
    """One entry of an ESP's suppression list."""

    address: str
    kind: Kind
    detail: str
    #: when the ESP added it (epoch seconds), if it says
    created: float | None = None


def epoch(value: Any) -> float | None:
    """An ESP's timestamp (epoch seconds, ISO 8601 or RFC 2822) as epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            stamp = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    return stamp.timestamp() if stamp.tzinfo is not None else None
