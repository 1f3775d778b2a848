"""Ingest: store delivery events once, then apply them.

::

    events --fill message_id from the sends' records--> store (one transaction, dedupe
    by (provider, event id)) --> new ones only: suppression list (the kinds in
    ``suppression.on``) --> settle ``unknown`` outbox rows --> listeners --> log

``ingest`` returns once the events are stored (a webhook answers 2xx after it); applying
them is idempotent (an address already suppressed stays so, a settled row is no longer
``unknown``). Where one store holds both the events and the list, a batch and its
suppressions are one transaction. Where they are two stores (events in the outbox's
database, the list in Redis or another database), the batch's suppressions are written
*first*, for every suppressing event in it, new or not: a crash after them and before the
events leaves the events unstored, so the ESP's redelivery stores them (and adds nothing
twice); the other order would store the events, lose the suppressions, and drop the
redelivery as duplicates. The price: a redelivered event re-adds its address, also if
someone removed it from the list in between. A crash after the events and before the
settling leaves a row ``unknown`` (its redelivery is a duplicate): ``mailer outbox
reconcile`` settles it. At most the listeners' calls for those events are lost.

The sends' records (provider, provider's id -> our Message-ID) are written behind: a
successful send appends to a buffer (no I/O on the send's path), flushed in one
transaction when it holds 256 records, before every ingest, at most 1 s after a send
(by the next send or ingest), and at close. A process killed in that second loses those
records; an event then still finds its message through the correlation key the ESP
echoes, where there is one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from .._log import get_logger
from .config import EventsConfig, SuppressionConfig
from .model import PROOF_OF_ACCEPTANCE, DeliveryEvent, IngestReport
from .store import AtomicIngest, EventStore, SendRecord, SuppressionEntry, entries_for
from .suppression import Suppression, _on_asyncio

__all__ = ["DeliveryHub", "Listener", "Settle"]

log = get_logger("mailer.events")

Listener = Callable[[DeliveryEvent], Any]
#: settle(message_id, provider, when) -> whether an ``unknown`` row became ``sent``
Settle = Callable[[str, str, float], Awaitable[bool]]

_FLUSH_AT = 256
_FLUSH_EVERY = 1.0
_RECENT = 10_000
_MAX_BATCH = 10_000


class DeliveryHub:
    """The events side of a Mailer: ingest, listeners, the sends' records."""

    def __init__(
        self,
        store: EventStore,
        suppression: Suppression,
        config: EventsConfig,
        *,
        settle: Settle | None = None,
    ) -> None:
        self.store = store
        self.suppression = suppression
        self.config = config
        self._settle = settle
        self._listeners: list[Listener] = []
        self._pending: list[SendRecord] = []
        self._first_pending = 0.0
        #: this process's latest sends, for lookups without a round trip
        self._recent: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._opened = False
        self._lock: anyio.Lock | None = None
        self._flushing: asyncio.Task[None] | None = None

    @property
    def suppression_config(self) -> SuppressionConfig:
        return self.suppression.config

    async def _open(self) -> None:
        if self._opened:
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if not self._opened:
                await self.store.open()
                self._opened = True

    async def aclose(self) -> None:
        task, self._flushing = self._flushing, None
        if task is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)
        if self._pending:
            with anyio.CancelScope(shield=True):
                await self.flush()
        if self._opened:
            self._opened = False
            await self.store.close()

    # -- listeners -----------------------------------------------------------------------

    def on_delivery(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` (sync or async) once per stored event; returns a
        function that unsubscribes. An exception in a listener is logged, not raised."""
        if not callable(listener):
            raise TypeError("on_delivery takes a callable")
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- the sends' records ----------------------------------------------------------------

    def record_send(self, provider: str, provider_message_id: str, message_id: str) -> None:
        """Remember a successful send's ids (no I/O: see the module's doc)."""
        key = (provider, provider_message_id)
        recent = self._recent
        recent[key] = message_id
        if len(recent) > _RECENT:
            recent.popitem(last=False)
        now = time.time()
        if not self._pending:
            self._first_pending = now
        self._pending.append(SendRecord(provider, provider_message_id, message_id, now))

    def flush_due(self) -> bool:
        """Whether the buffer should be written now."""
        pending = self._pending
        return bool(pending) and (
            len(pending) >= _FLUSH_AT or time.time() - self._first_pending >= _FLUSH_EVERY
        )

    async def flush_soon(self) -> None:
        """Flush in the background on asyncio (the send does not wait for it); inline
        on other event loops. A failed background flush keeps its records and logs."""
        if not _on_asyncio():
            await self.flush()
            return
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            log.warning("writing the sends' provider ids failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._flushing = None

    async def flush(self) -> None:
        """Write the buffered send records (one transaction)."""
        records, self._pending = self._pending, []
        if not records:
            return
        await self._open()
        try:
            await self.store.record_sends(records)
        except Exception:
            self._pending[:0] = records  # kept for the next flush
            raise

    # -- ingest --------------------------------------------------------------------------

    async def ingest(self, events: Sequence[DeliveryEvent]) -> IngestReport:
        """Store, dedupe and apply ``events`` (see the module's doc)."""
        events = list(events)
        if len(events) > _MAX_BATCH:
            raise ValueError(f"ingest_events takes at most {_MAX_BATCH} events a call")
        for event in events:
            if not isinstance(event, DeliveryEvent):
                raise TypeError(f"ingest_events takes DeliveryEvents, not {type(event).__name__}")
        if not events:
            return IngestReport()
        await self._open()
        if self._pending:
            await self.flush()
        events = await self._correlate(events)
        with anyio.CancelScope(shield=True):  # stored and applied together, or not at all
            atomic = self._atomic()
            if atomic is not None:  # one transaction: events and their suppressions
                fresh, entries, suppressed = await atomic.add_events_and_entries(
                    events, self._entry_for
                )
                self.suppression.remember(entries)
                new = [e for e, is_new in zip(events, fresh, strict=True) if is_new]
            else:  # two stores: the suppressions first (see the module's doc)
                entries = entries_for(events, [True] * len(events), self._entry_for)
                suppressed = await self.suppression.add_entries(entries)
                fresh = await self.store.add_events(events)
                new = [e for e, is_new in zip(events, fresh, strict=True) if is_new]
            settled = await self._settle_rows(new)
        for event in new:
            self._log(event)
            await self._notify(event)
        return IngestReport(
            new=len(new),
            duplicates=len(events) - len(new),
            suppressed=tuple(suppressed),
            settled=tuple(settled),
        )

    async def _correlate(self, events: list[DeliveryEvent]) -> list[DeliveryEvent]:
        """Fill ``message_id`` from the sends' records where only the provider's id came."""
        wanted: dict[str, set[str]] = {}
        found: dict[tuple[str, str], str] = {}
        for e in events:
            if e.message_id is None and e.provider_message_id is not None:
                key = (e.provider, e.provider_message_id)
                if key in self._recent:
                    found[key] = self._recent[key]
                else:
                    wanted.setdefault(e.provider, set()).add(e.provider_message_id)
        for provider, ids in wanted.items():
            for pmid, mid in (await self.store.lookup(provider, sorted(ids))).items():
                found[(provider, pmid)] = mid
        if not found:
            return events
        return [
            dataclasses.replace(e, message_id=found[(e.provider, e.provider_message_id)])
            if e.message_id is None
            and e.provider_message_id is not None
            and (e.provider, e.provider_message_id) in found
            else e
            for e in events
        ]

    def _atomic(self) -> AtomicIngest | None:
        """The store, when it also holds the suppression list and can write a batch and
        its suppressions in one transaction (SQLite, Postgres, memory; not Redis)."""
        store: object = self.store
        if store is self.suppression.store and hasattr(store, "add_events_and_entries"):
            return store  # type: ignore[return-value]
        return None

    def _entry_for(self, e: DeliveryEvent) -> SuppressionEntry | None:
        if not self.suppression.config.suppresses(e.suppression_key):
            return None
        reason = e.suppression_key + (f": {e.reason}" if e.reason else "")
        return SuppressionEntry(
            e.recipient, reason[:500], e.timestamp.timestamp(), e.provider, e.message_id
        )

    async def _settle_rows(self, new: list[DeliveryEvent]) -> list[str]:
        if self._settle is None:
            return []
        proofs: dict[str, DeliveryEvent] = {}
        for e in new:
            if e.type in PROOF_OF_ACCEPTANCE and e.message_id is not None:
                proofs.setdefault(e.message_id, e)
        settled = []
        for message_id, e in proofs.items():
            if await self._settle(message_id, e.provider, e.timestamp.timestamp()):
                settled.append(message_id)
                log.info(
                    "outbox row %s settled from unknown to sent by a %s event from %s",
                    message_id,
                    e.type,
                    e.provider,
                    extra={
                        "event": "settled",
                        "provider": e.provider,
                        "message_id": message_id,
                        "delivery_event": e.type,
                    },
                )
        return settled

    def _log(self, e: DeliveryEvent) -> None:
        log.info(
            "delivery event %s for %s from %s",
            e.type,
            e.message_id or "an unmatched message",
            e.provider,
            extra={
                "event": "delivery",
                "delivery_event": e.type,
                "provider": e.provider,
                "message_id": e.message_id,
                "provider_message_id": e.provider_message_id,
                "bounce": e.bounce,
                "event_id": e.event_id,
            },
        )

    async def _notify(self, event: DeliveryEvent) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning(
                    "an on_delivery listener raised %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"event": "listener_error", "message_id": event.message_id},
                )

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        await self._open()
        if self._pending:
            await self.flush()
        mid = message_id.strip().strip("<>")
        return await self.store.events(f"<{mid}>", limit)

    async def purge(self, older_than: float | None = None) -> int:
        """Delete what is older than ``older_than`` seconds (``events.retention`` by
        default)."""
        if older_than is not None and not older_than > 0:
            raise ValueError("purge_events(older_than=...) takes a positive number of seconds")
        await self._open()
        return await self.store.purge_events(
            self.config.retention if older_than is None else older_than
        )
