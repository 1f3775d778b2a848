"""``SyncMailer.suppression``: the suppression list's API, blocking.

Each call runs on the SyncMailer's loop thread and is bounded like a send; the owner is
anything with SyncMailer's ``_call`` (typed by a Protocol, so this module does not import
the facade).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .store import SuppressionEntry

if TYPE_CHECKING:
    from .._mailer import Mailer

__all__ = ["SyncSuppression"]


class _Owner(Protocol):
    def _call(self, start: Callable[[Mailer], Awaitable[Any]], what: str) -> Any: ...


class SyncSuppression:
    """``SyncMailer.suppression``: the list's API, each call bounded like a send."""

    def __init__(self, owner: _Owner) -> None:
        self._owner = owner

    def add(self, address: str, reason: str = "manual") -> bool:
        added: bool = self._owner._call(lambda m: m.suppression.add(address, reason), "add")
        return added

    def remove(self, address: str) -> bool:
        removed: bool = self._owner._call(lambda m: m.suppression.remove(address), "remove")
        return removed

    def get(self, address: str) -> SuppressionEntry | None:
        entry: SuppressionEntry | None = self._owner._call(
            lambda m: m.suppression.get(address), "get"
        )
        return entry

    def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        entries: list[SuppressionEntry] = self._owner._call(
            lambda m: m.suppression.list(limit, offset), "list"
        )
        return entries
