"""The SQLite outbox's claims and results: a group of rows in a few statement steps.

Python's ``sqlite3`` releases the GIL around every ``sqlite3_step``: once per row that a
query returns and once per parameter set of ``executemany``. The writer thread does
that while the event loop's thread runs Python nearly all the time, so each step hands
the GIL over and back: the writer waits until the loop's next system call to continue
(a claim of ~28 rows took 8-9 ms where the same SQL alone takes well under one), and
the loop pays a futex wake-up and a cache-cold start each time it gets the GIL back.
Measured beside a busy thread (docs/benchmarks.md, "The SQLite drain's GIL hand-overs"):
an ``executemany`` of 28 results took 0.81 ms and cost the other thread ~650 us; the same
rows as one ``UPDATE ... FROM json_each(?)`` took 0.26 ms and ~100 us.

So a claim and a group of results run as a handful of statements that each return at
most one row, whatever the group's size:

* the due rows, as one JSON array (``json_group_array``);
* the lease, one ``UPDATE ... WHERE id IN (...)`` without ``RETURNING``;
* the leased rows' columns and their content's lengths, as one JSON array;
* their content (JSON, rendering, seal), concatenated in one value per slice of at most
  :data:`_SLICE` bytes, cut apart here by those lengths (a large row is a slice alone,
  so a claim never holds much more than the rows themselves);
* the results, one ``UPDATE ... FROM json_each(?)``: the outcomes as a JSON array.

This needs SQLite 3.38 (JSON built in, ``->>``), and a UTF-8 database (content is
concatenated with ``||``, which works on text: in UTF-8 the bytes are kept as they are).
Elsewhere (:func:`one_step_supported` is false) the statements of before run, a row a
step. Both paths are tested against the same expectations.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from operator import itemgetter

from .store import MAX_AGE_PASSED, Claimed

__all__ = ["claim", "finish", "one_step_supported"]

#: most bytes of content concatenated into one value (a row larger is read alone)
_SLICE = 4 << 20


def one_step_supported(conn: sqlite3.Connection) -> bool:
    """Whether this connection's SQLite can run the few-step statements."""
    if sqlite3.sqlite_version_info < (3, 38, 0):
        return False
    (encoding,) = conn.execute("PRAGMA encoding").fetchone()
    return str(encoding).upper() == "UTF-8"


def claim(
    conn: sqlite3.Connection,
    *,
    owner: str,
    limit: int,
    now: float,
    until: float,
    max_age: float,
    commit: bool,
    one_step: bool,
) -> list[Claimed]:
    """Lease up to ``limit`` due rows to ``owner`` (oldest due first); rows too old to
    try on the way are marked dead. In the caller's transaction."""
    claimed: list[Claimed] = []
    oldest = now - max_age
    # Bounded: every pass moves each row it reads out of "queued" (or stops).
    while len(claimed) < limit:
        rows = (_due if one_step else _due_by_row)(conn, now, oldest, limit - len(claimed))
        if not rows:
            break
        # Too old to try: checked as they come due rather than by scanning every queued
        # row per claim (which made a backlog quadratic).
        old = [(MAX_AGE_PASSED, now, row) for row, too_old in rows if too_old]
        if old:
            conn.executemany(
                "UPDATE outbox SET state = 'dead', last_error = ?, updated = ? WHERE id = ?",
                old,
            )
        due = [row for row, too_old in rows if not too_old]
        if due:
            claimed += _lease(conn, due, owner, until, now, commit, one_step)
    return claimed


def finish(conn: sqlite3.Connection, params: Sequence[_Result], *, one_step: bool) -> list[bool]:
    """Write results (see :data:`_FINISH` for a parameter's order); whether each row's
    claim still held. In the caller's transaction or savepoint."""
    if len(params) == 1:
        return [conn.execute(_FINISH, params[0]).rowcount == 1]
    conn.execute("SAVEPOINT results")
    if one_step:
        changed = conn.execute(_FINISH_JSON, (json.dumps(params, ensure_ascii=False),)).rowcount
    else:
        changed = conn.executemany(_FINISH, params).rowcount
    if changed == len(params):
        conn.execute("RELEASE results")
        return [True] * len(params)
    # a claim was lost (or a row given twice): written again one at a time to say which
    conn.execute("ROLLBACK TO results")
    conn.execute("RELEASE results")
    return [conn.execute(_FINISH, p).rowcount == 1 for p in params]


#: a result's parameters: state, next_at, provider, error, updated, pin, row, claim
_Result = tuple[str, float | None, str | None, str | None, float, str | None, int, str]


def _due(conn: sqlite3.Connection, now: float, oldest: float, limit: int) -> list[tuple[int, bool]]:
    (found,) = conn.execute(_DUE_JSON, (oldest, now, limit)).fetchone()
    # the aggregate's order is not promised: each row carries its place
    ordered = sorted(json.loads(found), key=itemgetter(2))
    return [(row, bool(too_old)) for row, too_old, _ in ordered]


def _due_by_row(
    conn: sqlite3.Connection, now: float, oldest: float, limit: int
) -> list[tuple[int, bool]]:
    rows = conn.execute(_DUE, (now, limit)).fetchall()
    return [(row, created < oldest) for row, created in rows]


def _lease(
    conn: sqlite3.Connection,
    rows: list[int],
    owner: str,
    until: float,
    now: float,
    commit: bool,
    one_step: bool,
) -> list[Claimed]:
    """Lease ``rows`` (due, in the order given) to ``owner``, and read them back with
    their content: four statement steps for a claim of small messages (``one_step``),
    or ``RETURNING`` and a plain ``SELECT``, a row a step."""
    marks = ",".join("?" * len(rows))
    params = (owner, until, secrets.token_hex(8), int(commit), int(commit), now, *rows)
    if not one_step:
        returning = " RETURNING id, claim, message_id, attempts, created, pin"
        got = {r[0]: r for r in conn.execute(_LEASE.format(marks) + returning, params).fetchall()}
        bodies = {r[0]: r for r in conn.execute(_BODIES.format(marks), rows).fetchall()}
        return [
            Claimed(row, g[1], g[2], b[1], b[2], g[3], g[4], g[5], commit, b[3])
            for row in rows
            if (g := got.get(row)) is not None and (b := bodies[row])
        ]
    conn.execute(_LEASE.format(marks), params)
    (found,) = conn.execute(_META.format(marks), rows).fetchone()
    meta = {m[0]: m for m in json.loads(found)}
    if len(meta) != len(rows):  # a row without its content: as the statements of before
        raise sqlite3.DatabaseError(f"outbox rows {sorted(set(rows) - set(meta))} have no body")
    content: dict[int, tuple[bytes, bytes | None, bytes | None]] = {}
    for part in _slices([(row, meta[row]) for row in rows]):
        content.update(_content(conn, part, meta))
    out = []
    for row in rows:
        m = meta[row]
        message, raw, digest = content[row]
        out.append(Claimed(row, m[1], m[2], message, raw, m[3], float(m[4]), m[5], commit, digest))
    return out


def _slices(rows: list[tuple[int, list[object]]]) -> list[list[int]]:
    """The rows in order, cut where their content passes :data:`_SLICE` bytes."""
    out: list[list[int]] = []
    size = 0
    for row, m in rows:
        length = sum(n for n in m[6:9] if isinstance(n, int))
        if not out or size + length > _SLICE:
            out.append([])
            size = 0
        out[-1].append(row)
        size += length
    return out


def _content(
    conn: sqlite3.Connection, rows: list[int], meta: dict[int, list[object]]
) -> dict[int, tuple[bytes, bytes | None, bytes | None]]:
    marks = ",".join("?" * len(rows))
    ids, blob = conn.execute(_CONTENT.format(marks), rows).fetchone()
    blob = blob or b""
    out: dict[int, tuple[bytes, bytes | None, bytes | None]] = {}
    view, at = memoryview(blob), 0
    for row in json.loads(ids):
        parts: list[bytes | None] = []
        for n in meta[row][6:9]:
            if n is None:
                parts.append(None)
            else:
                assert isinstance(n, int)
                parts.append(bytes(view[at : at + n]))
                at += n
        message, raw, digest = parts
        assert message is not None
        out[row] = (message, raw, digest)
    if at != len(blob):  # the lengths and the concatenation disagree: never guess
        raise sqlite3.DatabaseError(f"outbox content of rows {rows} did not add up")
    return out


#: the next due rows, oldest due first: id, whether created before ``oldest``, place
_DUE_JSON = (
    "SELECT json_group_array(json_array(id, created < ?, n)) FROM"
    " (SELECT id, created, row_number() OVER (ORDER BY next_at, id) AS n FROM outbox"
    " WHERE state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT ?)"
)
_DUE = (
    "SELECT id, created FROM outbox WHERE state = 'queued' AND next_at <= ?"
    " ORDER BY next_at, id LIMIT ?"
)
#: leasing due rows, ``{}`` their ids' placeholders; a claim that records the commit
#: point resets the provider to the row's pin (the only one it may go to) or NULL:
#: whoever takes it is recorded with the result. Each row's claim is one token for the
#: call and the row's id, as on Postgres.
_LEASE = (
    "UPDATE outbox SET state = 'sending', lease_owner = ?, lease_until = ?,"
    " claim = ? || ':' || id, committed = ?,"
    " provider = CASE WHEN ? THEN pin ELSE provider END,"
    " attempts = attempts + 1, updated = ?"
    " WHERE id IN ({})"
)

#: the leased rows: columns, and their content's lengths in bytes (NULL: no value; a
#: value stored as text counted in bytes too; ``length`` of a blob column reads only its
#: header, of a CAST the whole value). ``created`` as text with 17 digits: JSON's
#: numbers keep only 15.
_META = (
    "SELECT json_group_array(json_array(o.id, o.claim, o.message_id, o.attempts,"
    " printf('%!.17g', o.created), o.pin,"
    " CASE typeof(b.message) WHEN 'blob' THEN length(b.message)"
    " ELSE length(CAST(b.message AS BLOB)) END,"
    " CASE typeof(b.raw) WHEN 'blob' THEN length(b.raw) ELSE length(CAST(b.raw AS BLOB)) END,"
    " CASE typeof(b.digest) WHEN 'blob' THEN length(b.digest)"
    " ELSE length(CAST(b.digest AS BLOB)) END))"
    " FROM outbox o JOIN outbox_body b ON b.id = o.id WHERE o.id IN ({})"
)
_BODIES = "SELECT id, message, raw, digest FROM outbox_body WHERE id IN ({})"
#: the rows' content concatenated, and their ids in the same order (one pass makes both)
_CONTENT = (
    "SELECT json_group_array(id),"
    " CAST(group_concat(message || ifnull(raw, x'') || ifnull(digest, x''), '') AS BLOB)"
    " FROM outbox_body WHERE id IN ({})"
)
#: an attempt's result, if its claim still holds the row
_FINISH = (
    "UPDATE outbox SET state = ?, next_at = COALESCE(?, next_at),"
    " provider = COALESCE(?, provider), last_error = ?, updated = ?,"
    " lease_owner = NULL, lease_until = NULL, pin = ?"
    " WHERE id = ? AND claim = ? AND state IN ('sending', 'unknown')"
)
#: every result of a group in one statement: the parameters of :data:`_FINISH` as a JSON
#: array of arrays. ``+state``: the row is found by its id, not by scanning every row in
#: 'sending' or 'unknown' (tests/outbox/test_sqlite_rows.py reads the plan).
_FINISH_JSON = (
    "UPDATE outbox SET state = r.value ->> 0, next_at = COALESCE(r.value ->> 1, next_at),"
    " provider = COALESCE(r.value ->> 2, provider), last_error = r.value ->> 3,"
    " updated = r.value ->> 4, lease_owner = NULL, lease_until = NULL, pin = r.value ->> 5"
    " FROM json_each(?) AS r"
    " WHERE outbox.id = r.value ->> 6 AND outbox.claim = r.value ->> 7"
    " AND +outbox.state IN ('sending', 'unknown')"
)
