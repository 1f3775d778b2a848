"""Events and the suppression list in Postgres, for many processes on many machines.

The database is the outbox's when there is one (tables ``mailer_events``,
``mailer_sends``, ``mailer_suppression``, ``mailer_suppression_log`` beside
``mailer_outbox``), on a small asyncpg pool of our own.

A batch of events is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of arrays
(``unnest``): one round trip for a thousand events, the duplicates told by what the
statement did not return.

The change log's sequence is a ``bigserial``: under concurrent writers a lower number can
commit after a higher one that a reader already saw, and an incremental read would skip
it. So besides the incremental reads, every :data:`RESYNC_EVERY` refreshes load a full
snapshot: a change is seen within one refresh almost always, and within a resync in
the rare race.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
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

__all__ = ["RESYNC_EVERY", "PostgresBackend"]

#: incremental reads between full snapshots (see the module's doc)
RESYNC_EVERY = 30
_LOG_KEEP = 86400.0

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
        self._reads = 0

    def __repr__(self) -> str:
        return f"<PostgresBackend {redact_url(self.dsn)!r}>"

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres events store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError:
            raise ConfigError(
                "a postgresql:// events or suppression store needs asyncpg: "
                "pip install 'mailer-failover[postgres]'"
            ) from None
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
        self._reads = 0
        async with self._p().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM mailer_suppression_log")
            rows = await conn.fetch("SELECT address, reason FROM mailer_suppression")
        return {r[0]: r[1] for r in rows}, seq

    async def changes(self, cursor: Any) -> Changes | None:
        self._reads += 1
        if self._reads >= RESYNC_EVERY:
            return None
        async with self._p().acquire() as conn:
            low = await conn.fetchval("SELECT coalesce(min(seq), 0) FROM mailer_suppression_log")
            if low > cursor + 1:
                return None
            rows = await conn.fetch(
                "SELECT seq, address, reason FROM mailer_suppression_log WHERE seq > $1"
                " ORDER BY seq",
                cursor,
            )
        last: dict[str, str | None] = {}
        for r in rows:
            last[r[1]] = r[2]
        return Changes(
            {a: r for a, r in last.items() if r is not None},
            frozenset(a for a, r in last.items() if r is None),
            rows[-1][0] if rows else cursor,
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
