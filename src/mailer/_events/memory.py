"""The in-process backend: events and a suppression list that live as long as the Mailer.

Used when no store is configured (then the suppression list covers this process only and
events are not durable: docs/events.md says so) and by tests of the layers above.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .model import DeliveryEvent
from .store import Changes, EntryFor, SendRecord, SuppressionEntry, entries_for, event_key

__all__ = ["MemoryBackend"]

#: send records kept (the oldest go first): about 100 bytes each
_MAX_SENDS = 100_000


class MemoryBackend:
    """An :class:`EventStore` and :class:`SuppressionStore` in memory."""

    def __init__(self) -> None:
        #: (provider, event key) -> (when stored, the event)
        self._events: dict[tuple[str, str], tuple[float, DeliveryEvent]] = {}
        self._sends: OrderedDict[tuple[str, str], SendRecord] = OrderedDict()
        self._entries: dict[str, SuppressionEntry] = {}
        self._version = 0

    def __repr__(self) -> str:
        return "<MemoryBackend>"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- events --------------------------------------------------------------------------

    async def add_events(self, events: Sequence[DeliveryEvent]) -> list[bool]:
        new: list[bool] = []
        now = time.time()
        for event in events:
            key = (event.provider, event_key(event))
            fresh = key not in self._events
            if fresh:
                self._events[key] = (now, event)
            new.append(fresh)
        return new

    async def add_events_and_entries(
        self, events: Sequence[DeliveryEvent], entry_for: EntryFor
    ) -> tuple[list[bool], list[SuppressionEntry], list[str]]:
        fresh = await self.add_events(events)
        entries = entries_for(events, fresh, entry_for)
        return fresh, entries, await self.add(entries)

    async def record_sends(self, records: Sequence[SendRecord]) -> None:
        for record in records:
            self._sends[(record.provider, record.provider_message_id)] = record
        while len(self._sends) > _MAX_SENDS:
            self._sends.popitem(last=False)

    async def lookup(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for pmid in provider_message_ids:
            record = self._sends.get((provider, pmid))
            if record is not None:
                out[pmid] = record.message_id
        return out

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        found = [e for _, e in self._events.values() if e.message_id == message_id]
        return sorted(found, key=lambda e: e.timestamp)[:limit]

    async def purge_events(self, older_than: float) -> int:
        cut = time.time() - older_than
        old = [k for k, (stored, _) in self._events.items() if stored < cut]
        for key in old:
            del self._events[key]
        for key in [k for k, r in self._sends.items() if r.created < cut]:
            del self._sends[key]
        return len(old)

    # -- suppression ---------------------------------------------------------------------

    async def add(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        added = []
        for entry in entries:
            if entry.address not in self._entries:
                self._entries[entry.address] = entry
                added.append(entry.address)
        self._version += 1
        return added

    async def remove(self, address: str) -> bool:
        self._version += 1
        return self._entries.pop(address, None) is not None

    async def get(self, address: str) -> SuppressionEntry | None:
        return self._entries.get(address)

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        ordered = sorted(self._entries.values(), key=lambda e: (e.created, e.address))
        return ordered[offset : offset + limit]

    async def snapshot(self) -> tuple[dict[str, str], Any]:
        return {a: e.reason for a, e in self._entries.items()}, self._version

    async def changes(self, cursor: Any) -> Changes | None:
        # one process: the local copy is updated in place by every write; nothing to follow
        return Changes({}, frozenset(), self._version) if cursor == self._version else None
