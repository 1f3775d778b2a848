"""What an event store and a suppression store do, whatever the database.

Two protocols, because the two lists live in different places: events go into the
outbox's database when there is one, the suppression list into ``suppression.store``.
A backend (SQLite, Postgres, Redis, memory) implements both, so one URL can hold both.

The suppression store keeps a change log beside its entries: each process keeps a local
copy of the addresses (the check before every send reads only that) and asks the store
for the changes after its cursor. ``changes`` answers ``None`` when the cursor is too old
(the log was trimmed past it): the caller then loads a new ``snapshot``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .model import DeliveryEvent

__all__ = [
    "AtomicIngest",
    "Changes",
    "EntryFor",
    "EventStore",
    "SendRecord",
    "SuppressionEntry",
    "SuppressionStore",
    "entries_for",
    "event_from_row",
    "event_key",
    "event_row",
]


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """One suppressed address: why, which provider reported it, when, for which message."""

    address: str
    reason: str
    created: float
    provider: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendRecord:
    """A successful send's ids: an event that carries only the provider's id finds our
    Message-ID through it."""

    provider: str
    provider_message_id: str
    message_id: str
    created: float


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a cursor: ``added`` maps address to reason; ``cursor`` is the
    position to ask from next time."""

    added: dict[str, str]
    removed: frozenset[str]
    cursor: Any


def event_key(event: DeliveryEvent) -> str:
    """The id that makes an event a duplicate: the ESP's own ``event_id``, or, for a
    source without one (an SMTP bounce), a digest of what the event says, so the same
    report ingested twice is still one event."""
    if event.event_id is not None:
        return event.event_id
    text = "\0".join(
        str(v)
        for v in (
            event.type,
            event.recipient,
            event.timestamp.isoformat(),
            event.message_id,
            event.provider_message_id,
            event.bounce,
        )
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def event_row(event: DeliveryEvent) -> tuple[Any, ...]:
    """The columns every SQL store writes, in order: provider, event_key, type,
    message_id, provider_message_id, recipient, timestamp (epoch seconds), bounce,
    reason, raw (JSON text)."""
    try:
        raw = None if event.raw is None else json.dumps(event.raw, default=str)
    except (TypeError, ValueError):
        raw = json.dumps(repr(event.raw))
    return (
        event.provider,
        event_key(event),
        event.type,
        event.message_id,
        event.provider_message_id,
        event.recipient,
        event.timestamp.timestamp(),
        event.bounce,
        event.reason,
        raw,
    )


def event_from_row(row: Sequence[Any]) -> DeliveryEvent:
    """The inverse of :func:`event_row`."""
    provider, key, kind, mid, pmid, recipient, ts, bounce, reason, raw = row[:10]
    return DeliveryEvent(
        type=kind,
        provider=provider,
        recipient=recipient,
        timestamp=datetime.fromtimestamp(float(ts), UTC),
        message_id=mid,
        provider_message_id=pmid,
        bounce=bounce,
        reason=reason,
        event_id=None if str(key).startswith("sha256:") else key,
        raw=None if raw is None else json.loads(raw),
    )


class EventStore(Protocol):
    """Delivery events, deduplicated, and the sends' provider ids."""

    async def open(self) -> None:
        """Create the schema if needed. Idempotent."""

    async def close(self) -> None: ...

    async def add_events(self, events: Sequence[DeliveryEvent]) -> list[bool]:
        """Store the events in one transaction, committed on return; for each, whether
        it was new (False: its ``(provider, event_key)`` was stored before, or earlier
        in the same batch)."""

    async def record_sends(self, records: Sequence[SendRecord]) -> None:
        """Remember each send's provider id (one transaction)."""

    async def lookup(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, str]:
        """Our Message-IDs for these provider ids, where known."""

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        """A message's events, oldest first."""

    async def purge_events(self, older_than: float) -> int:
        """Delete events and send records older than ``older_than`` seconds."""


#: which suppression entry, if any, a new event makes (None: it suppresses nobody)
EntryFor = Callable[[DeliveryEvent], "SuppressionEntry | None"]


def entries_for(
    events: Sequence[DeliveryEvent], fresh: Sequence[bool], entry_for: EntryFor
) -> list[SuppressionEntry]:
    """The suppression entries of the new events, one per address (the first wins)."""
    entries: dict[str, SuppressionEntry] = {}
    for event, is_new in zip(events, fresh, strict=True):
        if is_new:
            entry = entry_for(event)
            if entry is not None and entry.address not in entries:
                entries[entry.address] = entry
    return list(entries.values())


class AtomicIngest(Protocol):
    """A backend that holds both lists stores a batch and its suppression entries in one
    transaction: a crash between the two cannot leave events stored (so their retries
    dropped as duplicates) whose suppression was never written."""

    async def add_events_and_entries(
        self, events: Sequence[DeliveryEvent], entry_for: EntryFor
    ) -> tuple[list[bool], list[SuppressionEntry], list[str]]:
        """As ``add_events``, then ``add`` of the new events' entries, in one transaction:
        (which events were new, the entries tried, the addresses that were new)."""


class SuppressionStore(Protocol):
    """The shared suppression list: the truth the local copies follow."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        """Add entries (an address already there keeps its first entry); returns the
        addresses that were new."""

    async def remove(self, address: str) -> bool: ...

    async def get(self, address: str) -> SuppressionEntry | None: ...

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        """Entries, oldest first."""

    async def snapshot(self) -> tuple[dict[str, str], Any]:
        """Every address with its reason, and the cursor they were read at."""

    async def changes(self, cursor: Any) -> Changes | None:
        """What changed after ``cursor``; None when the log no longer reaches back to it."""
