"""The outbox in PostgreSQL: many workers on many machines (driver: asyncpg).

Claims are one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``: workers
that claim at the same moment each lock different rows instead of waiting on each other,
and never get the same message. Every statement is its own short transaction; nothing is
held open while a message is sent. The commit-point records and results of concurrent
attempts share statements (:data:`_WRITE`, grouped by :mod:`._batch`), and so do
enqueues made at the same moment (:data:`_ADD_MANY`): on a busy server the cost per
statement, not the flush, is what an attempt waits for.

Lease times come from the database's clock (``now()``), so workers on machines whose
clocks disagree still agree on when a lease has expired. asyncpg was chosen over
psycopg 3 by measurement (benchmarks/outbox_pg_drivers.py, docs/benchmarks.md).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._log import get_logger
from .._pgdriver import import_asyncpg
from .._redact import redact_url
from . import _chunked
from ._batch import Batcher
from .postgres_dispatch import DISPATCH_SCHEMA, PostgresDispatch
from .store import (
    LEASE_EXPIRED_SAFE,
    LEASE_EXPIRED_UNKNOWN,
    MAX_AGE_PASSED,
    STATES,
    Claimed,
    NewMessage,
    OutboxItem,
    Outcome,
    State,
    Stored,
)

if TYPE_CHECKING:
    import asyncpg

__all__ = ["ADD_SQL", "IDENTITY_SQL", "PostgresStore", "add_params"]

log = get_logger("mailer.outbox")

#: Storing one message; ``{}`` are the driver's placeholders (asyncpg's ``$1``, psycopg's
#: ``%s``), since the Django backend runs it on its own connection, in the app's
#: transaction. Params: :func:`add_params`.
ADD_SQL = (
    "INSERT INTO mailer_outbox (message_id, state, message, raw, attempts, created,"
    " updated, next_at, last_error, digest) VALUES ({}, 'queued', {}, {}, {},"
    " extract(epoch from now()), extract(epoch from now()), {}, {}, {})"
    " ON CONFLICT (message_id) DO NOTHING"
)
_DOLLARS = tuple(f"${i}" for i in range(1, 8))

#: What says two connections write the same table: the database's name, the server's
#: start time (two servers with one database name differ there) and the table's oid as
#: this connection's search_path resolves it (NULL when it cannot see the table)
IDENTITY_SQL = (
    "SELECT current_database(), extract(epoch from pg_postmaster_start_time())::text,"
    " to_regclass('mailer_outbox')::oid::text"
)


def add_params(item: NewMessage) -> tuple[Any, ...]:
    """The parameters of :data:`ADD_SQL` for ``item``."""
    return (
        item.message_id,
        item.message_json,
        item.raw,
        item.attempts,
        item.next_at,
        item.last_error,
        item.digest,
    )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailer_outbox (
    id          BIGSERIAL PRIMARY KEY,
    message_id  TEXT    NOT NULL UNIQUE,
    state       TEXT    NOT NULL,
    message     BYTEA   NOT NULL,
    raw         BYTEA,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     DOUBLE PRECISION NOT NULL,
    updated     DOUBLE PRECISION NOT NULL,
    next_at     DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    claim       TEXT,
    committed   BOOLEAN NOT NULL DEFAULT false,
    provider    TEXT,
    last_error  TEXT,
    pin         TEXT,
    digest      BYTEA
);
-- added with the sealed load (_load.py): tables made before it gain it, NULL in old rows.
-- Looked up first: ALTER TABLE takes the table's exclusive lock even when the column
-- exists, and would queue every claim behind an app transaction holding a row of it.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'mailer_outbox'::regclass
                   AND attname = 'digest' AND NOT attisdropped) THEN
        ALTER TABLE mailer_outbox ADD COLUMN digest BYTEA;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS mailer_outbox_state_next ON mailer_outbox (state, next_at);
CREATE INDEX IF NOT EXISTS mailer_outbox_lease ON mailer_outbox (state, lease_until);
"""


class PostgresStore(PostgresDispatch):
    """An :class:`~mailer._outbox.store.OutboxStore` in table ``mailer_outbox``."""

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        #: when expired leases were last settled (time.monotonic())
        self._settled = -math.inf
        #: commit-point records and results, grouped (see _batch and _WRITE)
        self._writes: Batcher[_Write, bool] = Batcher(self._write)
        #: enqueues, grouped the same way (see _ADD_MANY)
        self._adds: Batcher[NewMessage, bool] = Batcher(self._add_many)

    def __repr__(self) -> str:
        return f"<PostgresStore {redact_url(self.dsn)!r}>"

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres outbox store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        asyncpg = import_asyncpg("a postgresql:// outbox")
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.pool_size, reset=_reset
        )
        # one creator at a time: concurrent CREATE ... IF NOT EXISTS can still collide
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7243911)")
            await conn.execute(_SCHEMA + DISPATCH_SCHEMA + _chunked.PG_SCHEMA)
            settings = await conn.fetchrow(
                "SELECT current_setting('synchronous_commit'), current_setting('fsync')"
            )
        if settings is not None and "off" in tuple(settings):
            log.warning(
                "the Postgres outbox's server has synchronous_commit=%s and fsync=%s: a "
                "server crash can lose the latest commit-point records, and a message "
                "sent just before it may be sent again (set both to on)",
                *settings,
            )

    async def close(self) -> None:
        await self._adds.aclose()
        await self._writes.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def add(self, item: NewMessage) -> bool:
        if item.parts:
            return await self._add_chunked(item)
        return await self._adds.submit(item)

    async def _add_chunked(self, item: NewMessage) -> bool:
        """A large message: the row and its attachments' chunks in one transaction of
        its own (not grouped: it holds a connection for as long as the chunks take)."""
        async with self._p().acquire() as conn, conn.transaction():
            row = await conn.fetchval(
                ADD_SQL.format(*_DOLLARS) + " RETURNING id", *add_params(item)
            )
            if row is None:
                return False
            await _chunked.pg_write(conn, row, item.parts)
            return True

    async def read_chunk(self, row: int, part: int, seq: int) -> bytes | None:
        value = await self._p().fetchval(_chunked.PG_READ, row, part, seq)
        return None if value is None else bytes(value)

    async def _add_many(self, items: Sequence[NewMessage]) -> list[bool]:
        """Enqueues made at the same moment, in one statement (one transaction).

        A Message-ID given twice keeps its first message, as one enqueue after another
        would: the later ones are not sent to the server and come back False, like an
        enqueue of a Message-ID already stored.
        """
        if len(items) == 1:  # alone: the plain statement (the server plans it once)
            status: str = await self._p().execute(ADD_SQL.format(*_DOLLARS), *add_params(items[0]))
            return [status.endswith(" 1")]
        first: dict[str, int] = {}
        for index, item in enumerate(items):
            first.setdefault(item.message_id, index)
        unique = [items[index] for index in first.values()]
        rows = await self._p().fetch(
            _ADD_MANY,
            [i.message_id for i in unique],
            [i.message_json for i in unique],
            [i.raw for i in unique],
            [i.attempts for i in unique],
            [i.next_at for i in unique],
            [i.last_error for i in unique],
            [i.digest for i in unique],
        )
        added = {r[0] for r in rows}
        return [
            first[item.message_id] == index and item.message_id in added
            for index, item in enumerate(items)
        ]

    async def identity(self) -> tuple[str, ...]:
        """This store's database and table (see :data:`IDENTITY_SQL`)."""
        row = await self._p().fetchrow(IDENTITY_SQL)
        assert row is not None
        return tuple(str(value) for value in row)

    async def claim(
        self, owner: str, limit: int, *, lease: float, max_age: float, commit: bool = False
    ) -> list[Claimed]:
        token = secrets.token_hex(8)
        async with self._p().acquire() as conn:
            # Expired leases need settling promptly, not within a millisecond: at most
            # every _SETTLE_EVERY, which saves a round trip on most claims under load.
            now = time.monotonic()
            if now - self._settled >= _SETTLE_EVERY:
                self._settled = now
                await conn.execute(_SETTLE, LEASE_EXPIRED_SAFE, LEASE_EXPIRED_UNKNOWN)
            # Bounded: each pass moves the rows it locks out of "queued" (or stops).
            while True:
                rows = await conn.fetch(
                    _CLAIM, owner, lease, token, limit, max_age, MAX_AGE_PASSED, commit
                )
                claimed = [
                    Claimed(
                        r[0],
                        r[1],
                        r[2],
                        bytes(r[3]),
                        _bytes(r[4]),
                        r[5],
                        r[6],
                        r[7],
                        commit,
                        _bytes(r[8]),
                    )
                    for r in rows
                    if r[1] is not None
                ]
                # every row found was too old (now dead): look again for due ones
                if claimed or not rows:
                    return claimed

    async def mark_committing(self, row: int, claim: str, provider: str | None) -> bool:
        return await self._writes.submit(_Write(row, claim, provider))

    async def finish(self, row: int, claim: str, outcome: Outcome) -> bool:
        return await self._writes.submit(_Write(row, claim, None, outcome))

    async def _write(self, items: Sequence[_Write]) -> list[bool]:
        """Commit-point records and results of concurrent attempts, in one statement."""
        marks = [w for w in items if w.outcome is None]
        done = [(w, w.outcome) for w in items if w.outcome is not None]
        rows = await self._p().fetch(
            _WRITE,
            [w.row for w in marks],
            [w.claim for w in marks],
            [w.provider for w in marks],
            [w.row for w, _ in done],
            [w.claim for w, _ in done],
            [o.state for _, o in done],
            [o.next_at for _, o in done],
            [o.provider for _, o in done],
            [_text(o.error) for _, o in done],
            [o.pin for _, o in done],
        )
        written = {(r[0], r[1]) for r in rows}
        return [(w.row, w.outcome is None) in written for w in items]

    async def renew(self, owner: str, *, lease: float) -> int:
        status: str = await self._p().execute(
            "UPDATE mailer_outbox SET lease_until = extract(epoch from now()) + $1"
            " WHERE state = 'sending' AND lease_owner = $2",
            lease,
            owner,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def next_due(self) -> float | None:
        value = await self._p().fetchval(
            "SELECT MIN(next_at) FROM mailer_outbox WHERE state = 'queued'"
        )
        return None if value is None else float(value)

    async def stats(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for state, n in await self._p().fetch(
            "SELECT state, COUNT(*) FROM mailer_outbox GROUP BY state"
        ):
            counts[state] = int(n)
        return counts

    async def items(self, state: State | None = None, limit: int = 100) -> list[OutboxItem]:
        rows = await self._p().fetch(
            f"SELECT {OutboxItem.COLUMNS} FROM mailer_outbox"  # noqa: S608 - constant columns
            " WHERE $1::text IS NULL OR state = $1 ORDER BY id LIMIT $2",
            state,
            limit,
        )
        return [OutboxItem.from_row(r) for r in rows]

    async def retry(self, message_ids: list[str]) -> int:
        status: str = await self._p().execute(
            "UPDATE mailer_outbox SET state = 'queued', next_at = extract(epoch from now()),"
            " updated = extract(epoch from now()), pin = NULL,"
            " committed = false, claim = NULL, lease_owner = NULL, lease_until = NULL"
            " WHERE message_id = ANY($1::text[]) AND state != 'sending'",
            message_ids,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def settle(self, message_id: str, provider: str, note: str) -> bool:
        status: str = await self._p().execute(
            "UPDATE mailer_outbox SET state = 'sent', provider = $2, last_error = $3,"
            " updated = extract(epoch from now())"
            " WHERE message_id = $1 AND state = 'unknown'",
            message_id,
            provider,
            note,
        )
        return status.endswith(" 1")

    async def content(self, message_id: str) -> Stored | None:
        row = await self._p().fetchrow(
            "SELECT id, message, raw FROM mailer_outbox WHERE message_id = $1", message_id
        )
        if row is None:
            return None
        raw = row["raw"]
        return Stored(row["id"], bytes(row["message"]), None if raw is None else bytes(raw))

    async def purge(self, state: State, older_than: float) -> int:
        status: str = await self._p().execute(
            "DELETE FROM mailer_outbox"
            " WHERE state = $1 AND updated < extract(epoch from now()) - $2",
            state,
            older_than,
        )
        return int(status.rsplit(" ", 1)[-1])


#: :data:`ADD_SQL` for several messages (distinct Message-IDs), stored in the order
#: given (their ids ascend with it, as one enqueue after another would number them).
_ADD_MANY = """
INSERT INTO mailer_outbox (message_id, state, message, raw, attempts, created, updated,
    next_at, last_error, digest)
SELECT v.message_id, 'queued', v.message, v.raw, v.attempts, extract(epoch from now()),
    extract(epoch from now()), v.next_at, v.last_error, v.digest
FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int[], $5::float8[], $6::text[],
        $7::bytea[])
    WITH ORDINALITY AS v(message_id, message, raw, attempts, next_at, last_error, digest, n)
ORDER BY v.n
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""


@dataclass(frozen=True, slots=True)
class _Write:
    """A commit-point record (``outcome`` None) or a result, waiting to be written."""

    row: int
    claim: str
    #: the provider about to cross (a record)
    provider: str | None
    outcome: Outcome | None = None


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection going back to the pool needs beyond asyncpg's own local reset
    (which rolls back a transaction left open): nothing. asyncpg's default reset also
    sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release, a round trip (and the server's CPU) after each claim and each grouped
    write, to undo session state this store never makes: its one advisory lock is a
    transaction's, no cursor outlives its statement, and it runs no LISTEN and no SET.
    """


def _text(value: str | None) -> str | None:
    """Postgres text cannot hold NUL (a server's reply may): it would fail the write."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


#: seconds between two settlings of expired leases by one store (see claim)
_SETTLE_EVERY = 0.1

#: Expired leases, settled by the commit flag as the SQLite store does (one round trip).
_SETTLE = """
WITH
safe AS (
    UPDATE mailer_outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL,
        claim = NULL, last_error = $1, updated = extract(epoch from now())
    WHERE state = 'sending' AND lease_until < extract(epoch from now()) AND NOT committed
)
UPDATE mailer_outbox SET state = 'unknown', lease_owner = NULL, lease_until = NULL,
    last_error = $2, updated = extract(epoch from now())
WHERE state = 'sending' AND lease_until < extract(epoch from now()) AND committed
"""

#: Lease up to $4 due messages in one statement, sending those older than max_age to
#: dead instead (checked as they come due: scanning every queued row on every claim made
#: a backlog quadratic). $7: the claim records the commit point too (see
#: :meth:`PostgresStore.claim`; the provider is reset to the pin or NULL).
_CLAIM = """
WITH
due AS (
    SELECT id, created < extract(epoch from now()) - $5::float8 AS too_old FROM mailer_outbox
    WHERE state = 'queued' AND next_at <= extract(epoch from now())
    ORDER BY next_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
),
dead AS (
    UPDATE mailer_outbox m SET state = 'dead', last_error = $6,
        updated = extract(epoch from now())
    FROM due WHERE m.id = due.id AND due.too_old
    RETURNING m.id
),
got AS (
    UPDATE mailer_outbox m SET state = 'sending', lease_owner = $1,
        lease_until = extract(epoch from now()) + $2, claim = $3 || ':' || m.id,
        committed = $7::boolean, provider = CASE WHEN $7::boolean THEN m.pin ELSE m.provider END,
        attempts = attempts + 1, updated = extract(epoch from now())
    FROM due WHERE m.id = due.id AND NOT due.too_old
    RETURNING m.id, m.claim, m.message_id, m.message, m.raw, m.attempts, m.created, m.pin,
        m.digest
)
SELECT id, claim, message_id, message, raw, attempts, created, pin, digest FROM got
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM dead
"""

#: Commit-point records ($1-$3: rows, claims, providers) and results ($4-$10: one array
#: per column) of concurrent attempts in one statement: one round trip, one transaction,
#: one WAL flush (synchronous_commit as the server has it: on by default) for all of
#: them. Every row is written only while its claim matches (a lost claim is neither
#: marked, so that attempt does not cross, nor finished); the ids written come back with
#: ``true`` for a record, ``false`` for a result. A record and a result for one row
#: cannot be in one statement under one claim (the result follows the send that follows
#: the record); under two claims only the current one matches. A result is accepted over
#: ``unknown`` too: a late worker's definitive outcome replaces what its expired lease
#: was settled to.
_WRITE = """
WITH
marked AS (
    UPDATE mailer_outbox m SET committed = true, provider = v.provider,
        updated = extract(epoch from now())
    FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v(id, claim, provider)
    WHERE m.id = v.id AND m.claim = v.claim AND m.state = 'sending'
    RETURNING m.id
),
finished AS (
    UPDATE mailer_outbox m SET state = v.state, next_at = COALESCE(v.next_at, m.next_at),
        provider = COALESCE(v.provider, m.provider), last_error = v.error,
        updated = extract(epoch from now()), lease_owner = NULL, lease_until = NULL,
        pin = v.pin
    FROM unnest($4::bigint[], $5::text[], $6::text[], $7::float8[], $8::text[],
                $9::text[], $10::text[]) AS v(id, claim, state, next_at, provider, error, pin)
    WHERE m.id = v.id AND m.claim = v.claim AND m.state IN ('sending', 'unknown')
    RETURNING m.id
)
SELECT id, true FROM marked UNION ALL SELECT id, false FROM finished
"""
