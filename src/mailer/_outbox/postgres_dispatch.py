"""The Postgres store's side of task-queue dispatch (docs/task-queues.md).

As :mod:`.sqlite_dispatch`: which rows were handed to an engine lives in its own table
(``mailer_outbox_dispatch``); a task claims its one row with ``FOR UPDATE SKIP LOCKED``,
so two copies of a task running at once never both lease it.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from .store import LEASE_EXPIRED_SAFE, LEASE_EXPIRED_UNKNOWN, MAX_AGE_PASSED, Claimed

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DISPATCH_SCHEMA", "PostgresDispatch"]

DISPATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailer_outbox_dispatch (
    id          BIGINT  PRIMARY KEY,
    engine      TEXT    NOT NULL,
    published   DOUBLE PRECISION NOT NULL,
    publishes   INTEGER NOT NULL DEFAULT 1
);
"""

#: a task may arrive this much before its row's next_at (the engine's clock, rounding)
DUE_SLACK = 2.0

_NOTE = """
INSERT INTO mailer_outbox_dispatch (id, engine, published)
SELECT id, $2, extract(epoch from now()) FROM mailer_outbox WHERE {where}
ON CONFLICT (id) DO UPDATE SET engine = excluded.engine, published = excluded.published,
    publishes = mailer_outbox_dispatch.publishes + 1
RETURNING id
"""

_CLAIM_ROW = """
WITH target AS (
    SELECT id, state, next_at > extract(epoch from now()) + $5 AS early,
        created < extract(epoch from now()) - $4::float8 AS too_old
    FROM mailer_outbox WHERE id = $1 FOR UPDATE SKIP LOCKED
),
dead AS (
    UPDATE mailer_outbox m SET state = 'dead', last_error = $6,
        updated = extract(epoch from now())
    FROM target t WHERE m.id = t.id AND t.state = 'queued' AND NOT t.early AND t.too_old
    RETURNING m.id
),
got AS (
    UPDATE mailer_outbox m SET state = 'sending', lease_owner = $2,
        lease_until = extract(epoch from now()) + $3, claim = $7 || ':' || m.id,
        committed = false, attempts = attempts + 1, updated = extract(epoch from now())
    FROM target t WHERE m.id = t.id AND t.state = 'queued' AND NOT t.early
        AND NOT t.too_old
    RETURNING m.claim, m.message_id, m.message, m.raw, m.attempts, m.created, m.pin, m.digest
)
SELECT (SELECT state FROM target), (SELECT early FROM target), (SELECT count(*) FROM dead), got.*
FROM (SELECT 1) one LEFT JOIN got ON true
"""

#: expired leases (as PostgresStore's _SETTLE), then the queued rows whose task was lost
_OVERDUE = """
WITH
safe AS (
    UPDATE mailer_outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL,
        claim = NULL, last_error = $3, updated = extract(epoch from now())
    WHERE state = 'sending' AND lease_until < extract(epoch from now()) AND NOT committed
    RETURNING id
),
unsure AS (
    UPDATE mailer_outbox SET state = 'unknown', lease_owner = NULL, lease_until = NULL,
        last_error = $4, updated = extract(epoch from now())
    WHERE state = 'sending' AND lease_until < extract(epoch from now()) AND committed
)
SELECT o.id FROM mailer_outbox o LEFT JOIN mailer_outbox_dispatch d ON d.id = o.id
WHERE o.state = 'queued' AND o.next_at <= extract(epoch from now()) - $1
    AND (d.published IS NULL OR d.published <= extract(epoch from now()) - $1)
ORDER BY o.next_at LIMIT $2
"""


class PostgresDispatch:
    """Mixed into :class:`~.postgres.PostgresStore`: the operations of dispatch."""

    def _p(self) -> asyncpg.Pool:
        raise NotImplementedError  # PostgresStore's

    async def dispatched(self, message_id: str, engine: str) -> int | None:
        """Record that ``message_id``'s task is being published; its row id (None when
        it is no longer queued)."""
        where = "message_id = $1 AND state = 'queued'"
        value = await self._p().fetchval(_NOTE.format(where=where), message_id, engine)
        return None if value is None else int(value)

    async def redispatched(self, row: int, engine: str) -> None:
        await self._p().execute(_NOTE.format(where="id = $1"), row, engine)

    async def claim_row(
        self, row: int, owner: str, *, lease: float, max_age: float
    ) -> Claimed | str:
        """Lease row ``row`` to ``owner`` if it is queued and due; else why not."""
        pool = self._p()
        await pool.execute(
            "UPDATE mailer_outbox SET state = CASE WHEN committed THEN 'unknown'"
            " ELSE 'queued' END, lease_owner = NULL, lease_until = NULL,"
            " claim = CASE WHEN committed THEN claim END,"
            " last_error = CASE WHEN committed THEN $3 ELSE $2 END,"
            " updated = extract(epoch from now())"
            " WHERE id = $1 AND state = 'sending' AND lease_until < extract(epoch from now())",
            row,
            LEASE_EXPIRED_SAFE,
            LEASE_EXPIRED_UNKNOWN,
        )
        token = secrets.token_hex(8)
        r = await pool.fetchrow(
            _CLAIM_ROW, row, owner, lease, max_age, DUE_SLACK, MAX_AGE_PASSED, token
        )
        assert r is not None
        state, early, dead = r[0], r[1], r[2]
        if r[3] is not None:
            return Claimed(
                row,
                r[3],
                r[4],
                bytes(r[5]),
                None if r[6] is None else bytes(r[6]),
                r[7],
                r[8],
                r[9],
                digest=None if r[10] is None else bytes(r[10]),
            )
        if state is None:
            # missing, or locked by a claim under way this very moment
            exists = await pool.fetchval("SELECT state FROM mailer_outbox WHERE id = $1", row)
            return "missing" if exists is None else str(exists)
        if dead:
            return "dead"
        return "not due" if state == "queued" and early else str(state)

    async def overdue(self, engine: str, *, grace: float, limit: int = 1000) -> list[int]:
        """Rows whose task was lost (expired leases settled first); recorded as
        published again."""
        pool = self._p()
        found = await pool.fetch(_OVERDUE, grace, limit, LEASE_EXPIRED_SAFE, LEASE_EXPIRED_UNKNOWN)
        rows = [int(r[0]) for r in found]
        if rows:
            await pool.execute(_NOTE.format(where="id = ANY($1::bigint[])"), rows, engine)
        return rows

    async def dispatch_stats(self) -> dict[str, dict[str, int]]:
        """Per engine: rows handed to it, tasks published, and those rows by state."""
        out: dict[str, dict[str, int]] = {}
        for engine, state, rows, publishes in await self._p().fetch(
            "SELECT d.engine, o.state, COUNT(*), SUM(d.publishes) FROM mailer_outbox_dispatch d"
            " JOIN mailer_outbox o ON o.id = d.id GROUP BY d.engine, o.state"
        ):
            counts = out.setdefault(engine, {"rows": 0, "published": 0})
            counts["rows"] += int(rows)
            counts["published"] += int(publishes)
            counts[state] = int(rows)
        return out
