"""Events and the suppression list in Postgres, for many processes on many machines.

The database is the outbox's when there is one (tables ``mailer_events``,
``mailer_sends``, ``mailer_suppression``, ``mailer_suppression_log`` beside
``mailer_outbox``), on a small asyncpg pool of our own.

A batch of events is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of arrays
(``unnest``): one round trip for a thousand events, the duplicates told by what the
statement did not return.

The change log's sequence is a ``bigserial``: under concurrent writers a lower number can
commit after a higher one that a reader already saw, and a read of "after the highest
seen" would skip it. So the cursor (:class:`LogCursor`) also holds the *holes*: numbers
below its highest that were not there when read. Each read asks for what is after the
highest and for the holes; a hole that fills is a change that committed late, and the
addresses it names are read from the list itself (the truth, whatever order their log
rows committed in). A hole still empty after :data:`HOLE_WAIT` seconds is a transaction
that rolled back (a sequence number is never given back), or one open far longer than a
write of ours takes: the next refresh then loads a full snapshot, once, rather than
guess. So a change is seen by the next refresh after it commits, in every order, without
the periodic full reload the list used to need (a 100,000-entry snapshot every 30 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._pgdriver import import_asyncpg
from .._redact import redact_url
from .model import DeliveryEvent
from .store import (
    Changes,
    EntryFor,
    SendRecord,
    SuppressionEntry,
    entries_for,
    event_from_row,
    event_row,
)

if TYPE_CHECKING:
    import asyncpg

__all__ = ["HOLE_WAIT", "MAX_HOLES", "LogCursor", "PostgresBackend"]

#: seconds a hole in the change log is waited for before a full snapshot (see the doc)
HOLE_WAIT = 60.0
#: holes tracked at most; more (a storm of rolled-back writes) loads a full snapshot
MAX_HOLES = 10_000
#: log rows a snapshot looks back through for holes below its highest number
_TAIL = 1000
_LOG_KEEP = 86400.0


@dataclass(frozen=True, slots=True)
class LogCursor:
    """Where a reader is in the change log: its highest number read, and the lower
    numbers it has not seen yet, each with when it was first missed (monotonic)."""

    seq: int
    holes: tuple[tuple[int, float], ...] = ()
    #: when this reader last read the log (epoch seconds): the log is trimmed only of
    #: rows older than :data:`_LOG_KEEP`, so a reader back within half of that cannot
    #: have lost an unread row to the trim, and a gap at the log's start is a hole
    read_at: float = 0.0


def _holes(present: Iterable[int], low: int, high: int, now: float) -> list[tuple[int, float]]:
    """The numbers in ``(low, high)`` not in ``present``, first missed ``now``."""
    seen = set(present)
    return [(n, now) for n in range(low + 1, high) if n not in seen]


SCHEMA = """
CREATE TABLE IF NOT EXISTS mailer_events (
    id                  bigserial PRIMARY KEY,
    provider            text NOT NULL,
    event_key           text NOT NULL,
    type                text NOT NULL,
    message_id          text,
    provider_message_id text,
    recipient           text NOT NULL,
    timestamp           double precision NOT NULL,
    bounce              text,
    reason              text,
    raw                 text,
    stored              double precision NOT NULL,
    UNIQUE (provider, event_key)
);
CREATE INDEX IF NOT EXISTS mailer_events_message ON mailer_events (message_id);
CREATE INDEX IF NOT EXISTS mailer_events_stored ON mailer_events (stored);
CREATE TABLE IF NOT EXISTS mailer_sends (
    provider            text NOT NULL,
    provider_message_id text NOT NULL,
    message_id          text NOT NULL,
    created             double precision NOT NULL,
    PRIMARY KEY (provider, provider_message_id)
);
CREATE TABLE IF NOT EXISTS mailer_suppression (
    address     text PRIMARY KEY,
    reason      text NOT NULL,
    provider    text,
    message_id  text,
    created     double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS mailer_suppression_log (
    seq         bigserial PRIMARY KEY,
    address     text NOT NULL,
    reason      text,
    at          double precision NOT NULL
);
"""

_ADD_EVENTS = """
INSERT INTO mailer_events (provider, event_key, type, message_id, provider_message_id,
    recipient, timestamp, bounce, reason, raw, stored)
SELECT *, $11::double precision FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
    $5::text[], $6::text[], $7::double precision[], $8::text[], $9::text[], $10::text[])
ON CONFLICT (provider, event_key) DO NOTHING
RETURNING provider, event_key
"""

_ADD_ENTRIES = """
WITH new AS (
    INSERT INTO mailer_suppression (address, reason, provider, message_id, created)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
        $5::double precision[])
    ON CONFLICT (address) DO NOTHING
    RETURNING address, reason
), logged AS (
    INSERT INTO mailer_suppression_log (address, reason, at)
    SELECT address, reason, extract(epoch from now()) FROM new
)
SELECT address FROM new
"""

_ENTRY = "SELECT address, reason, created, provider, message_id FROM mailer_suppression"
_EVENT_COLUMNS = (
    "provider, event_key, type, message_id, provider_message_id, recipient, timestamp,"
    " bounce, reason, raw"
)


class PostgresBackend:
    """Events and suppression entries in a Postgres database."""

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        #: the clock holes are timed by (a test may set its own)
        self.clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"<PostgresBackend {redact_url(self.dsn)!r}>"

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres events store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        asyncpg = import_asyncpg("a postgresql:// events or suppression store")
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7243912)")
            await conn.execute(SCHEMA)
        if self._pool is None:
            self._pool = pool
        else:
            await pool.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- events --------------------------------------------------------------------------

    async def add_events(self, events: Sequence[DeliveryEvent]) -> list[bool]:
        async with self._p().acquire() as conn:
            return await _insert_events(conn, events)

    async def add_events_and_entries(
        self, events: Sequence[DeliveryEvent], entry_for: EntryFor
    ) -> tuple[list[bool], list[SuppressionEntry], list[str]]:
        async with self._p().acquire() as conn, conn.transaction():
            fresh = await _insert_events(conn, events)
            entries = entries_for(events, fresh, entry_for)
            added = await _insert_entries(conn, entries) if entries else []
        return fresh, entries, added

    async def record_sends(self, records: Sequence[SendRecord]) -> None:
        # One statement may not update a row twice ("ON CONFLICT DO UPDATE command cannot
        # affect row a second time"), so a batch that names a provider's id twice keeps
        # the last, as the other stores do by overwriting.
        records = list({(r.provider, r.provider_message_id): r for r in records}.values())
        await self._p().execute(
            "INSERT INTO mailer_sends SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::double precision[]) ON CONFLICT (provider, provider_message_id) DO UPDATE"
            " SET message_id = excluded.message_id, created = excluded.created",
            [r.provider for r in records],
            [r.provider_message_id for r in records],
            [r.message_id for r in records],
            [r.created for r in records],
        )

    async def lookup(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, str]:
        rows = await self._p().fetch(
            "SELECT provider_message_id, message_id FROM mailer_sends"
            " WHERE provider = $1 AND provider_message_id = ANY($2::text[])",
            provider,
            list(provider_message_ids),
        )
        return {r[0]: r[1] for r in rows}

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        rows = await self._p().fetch(
            f"SELECT {_EVENT_COLUMNS} FROM mailer_events WHERE message_id = $1"  # noqa: S608 - constant columns
            " ORDER BY timestamp, id LIMIT $2",
            message_id,
            limit,
        )
        return [event_from_row(tuple(r)) for r in rows]

    async def purge_events(self, older_than: float) -> int:
        cut = time.time() - older_than
        async with self._p().acquire() as conn, conn.transaction():
            status: str = await conn.execute("DELETE FROM mailer_events WHERE stored < $1", cut)
            await conn.execute("DELETE FROM mailer_sends WHERE created < $1", cut)
            await conn.execute(
                "DELETE FROM mailer_suppression_log WHERE at < $1",
                time.time() - max(older_than, _LOG_KEEP),
            )
        return int(status.rsplit(" ", 1)[-1])

    # -- suppression ---------------------------------------------------------------------

    async def add(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        async with self._p().acquire() as conn:
            return await _insert_entries(conn, entries)

    async def remove(self, address: str) -> bool:
        async with self._p().acquire() as conn, conn.transaction():
            status: str = await conn.execute(
                "DELETE FROM mailer_suppression WHERE address = $1", address
            )
            if not status.endswith(" 1"):
                return False
            await conn.execute(
                "INSERT INTO mailer_suppression_log (address, reason, at)"
                " VALUES ($1, NULL, extract(epoch from now()))",
                address,
            )
        return True

    async def get(self, address: str) -> SuppressionEntry | None:
        row = await self._p().fetchrow(f"{_ENTRY} WHERE address = $1", address)
        return None if row is None else SuppressionEntry(*row)

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        rows = await self._p().fetch(
            f"{_ENTRY} ORDER BY created, address LIMIT $1 OFFSET $2", limit, offset
        )
        return [SuppressionEntry(*r) for r in rows]

    async def snapshot(self) -> tuple[dict[str, str], Any]:
        async with self._p().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            tail = await conn.fetch(
                "SELECT seq, at < extract(epoch from now()) - $2 FROM mailer_suppression_log"
                " ORDER BY seq DESC LIMIT $1",
                _TAIL,
                HOLE_WAIT,
            )
            rows = await conn.fetch("SELECT address, reason FROM mailer_suppression")
        seqs = [r[0] for r in tail]
        high = seqs[0] if seqs else 0
        # A missing number above the last row written more than HOLE_WAIT ago may be a
        # write still in flight (numbers are taken in time order); below it, it is a
        # rollback or a trimmed row, and waiting for it would only force a resync.
        settled = [r[0] for r in tail if r[1]]
        floor = settled[0] if settled else max(0, high - _TAIL)
        holes = _holes(seqs, floor, high, self.clock())
        cursor = LogCursor(high, tuple(holes[-MAX_HOLES:]), time.time())
        return {r[0]: r[1] for r in rows}, cursor

    async def changes(self, cursor: Any) -> Changes | None:
        if not isinstance(cursor, LogCursor):
            return None
        now = self.clock()
        holes = [(n, t) for n, t in cursor.holes if now - t < HOLE_WAIT]
        if len(holes) < len(cursor.holes):
            return None  # a hole that never filled: resync once (see the module's doc)
        async with self._p().acquire() as conn:
            low = await conn.fetchval("SELECT coalesce(min(seq), 0) FROM mailer_suppression_log")
            if low > cursor.seq + 1 and time.time() - cursor.read_at > _LOG_KEEP / 2:
                return None  # the log may have been trimmed past us
            rows = await conn.fetch(
                "SELECT seq, address, reason FROM mailer_suppression_log"
                " WHERE seq > $1 OR seq = ANY($2::bigint[]) ORDER BY seq",
                cursor.seq,
                [n for n, _ in holes],
            )
            late = {r[1] for r in rows if r[0] <= cursor.seq}
            truth = (
                await conn.fetch(
                    "SELECT address, reason FROM mailer_suppression WHERE address = ANY($1)",
                    sorted(late),
                )
                if late
                else []
            )
        last: dict[str, str | None] = {}
        for r in rows:
            last[r[1]] = r[2]
        # a late row's address: its state now, not whichever of its rows came last here
        current = {r[0]: r[1] for r in truth}
        for address in late:
            last[address] = current.get(address)
        seqs = [r[0] for r in rows]
        high = max(cursor.seq, seqs[-1] if seqs else 0)
        filled = set(seqs)
        still = [(n, t) for n, t in holes if n not in filled]
        still += _holes((n for n in seqs if n > cursor.seq), cursor.seq, high, now)
        if len(still) > MAX_HOLES:
            return None
        return Changes(
            {a: r for a, r in last.items() if r is not None},
            frozenset(a for a, r in last.items() if r is None),
            LogCursor(high, tuple(still), time.time()),
        )


async def _insert_events(conn: Any, events: Sequence[DeliveryEvent]) -> list[bool]:
    """One statement for the batch; for each event, whether it was new (a second copy
    in the same batch is a duplicate)."""
    rows = [event_row(e) for e in events]
    columns = [list(c) for c in zip(*rows, strict=True)]
    returned = await conn.fetch(_ADD_EVENTS, *columns, time.time())
    fresh = {(r[0], r[1]) for r in returned}
    out = []
    for row in rows:
        key = (row[0], row[1])
        out.append(key in fresh)
        fresh.discard(key)
    return out


async def _insert_entries(conn: Any, entries: Sequence[SuppressionEntry]) -> list[str]:
    """The entries and their log rows in one statement; the addresses that were new."""
    rows = await conn.fetch(
        _ADD_ENTRIES,
        [e.address for e in entries],
        [e.reason for e in entries],
        [e.provider for e in entries],
        [e.message_id for e in entries],
        [e.created for e in entries],
    )
    return [r[0] for r in rows]
