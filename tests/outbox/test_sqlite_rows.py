"""The SQLite outbox's claims and results in a few statement steps (mailer._outbox.sqlite_rows)
against the statements of before, a row a step, on copies of the same file.

The rest of tests/outbox runs every SQLite test on both paths (the ``sqlite-by-row``
store of conftest.py); here: the same rows read and written the same way, byte for byte,
whatever the content (NUL, bytes that are not UTF-8, NULL columns), the order, the
slicing of large content, and the query plans that keep a result a primary-key lookup.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import pytest

from mailer._outbox import sqlite_rows
from mailer._outbox.sqlite import SQLiteStore
from mailer._outbox.store import Claimed, NewMessage

pytestmark = pytest.mark.skipif(
    sqlite3.sqlite_version_info < (3, 38, 0), reason="the few-step path needs SQLite 3.38"
)

#: (message JSON, raw rendering, seal): content that text handling would damage
CONTENTS: list[tuple[bytes, bytes | None, bytes | None]] = [
    (b'{"subject": "plain"}', b"Subject: plain\r\n\r\nbody\r\n", b"\x01" * 32),
    (b'{"subject": "caf\xc3\xa9"}', b"\x00\xff\xfe not UTF-8 \x80\r\n", None),
    (b"{}", None, b"\x00" * 32),  # an old row: no rendering stored
    (b"", b"", b""),  # empty values are not NULL
    (b'{"big": "' + b"x" * 9000 + b'"}', b"y" * 12000, b"\xff" * 32),
]


#: one clock for both paths' claims, so that their rows can be compared column by column
#: (the rows are made due before it, whenever the test runs)
NOW = time.time()


def _file(tmp_path: Path, contents: list[tuple[bytes, bytes | None, bytes | None]]) -> Path:
    """An outbox file holding one queued row per content, due oldest-id-last."""
    path = tmp_path / "outbox.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            for i, _ in enumerate(contents):
                # later rows are due earlier: the claim's order is not the ids'
                new = NewMessage(f"<m{i}@test>", b"{}", b"x", NOW - 10 - i)
                assert await store.add(new)
        finally:
            await store.close()

    asyncio.run(fill())
    with sqlite3.connect(path) as conn:
        for row, (message, raw, digest) in enumerate(contents, start=1):
            conn.execute(
                "UPDATE outbox_body SET message = ?, raw = ?, digest = ? WHERE id = ?",
                (message, raw, digest, row),
            )
    conn.close()
    return path


def _copy(path: Path) -> Path:
    """A copy of the outbox file, everything committed in it included (its WAL too)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    copy = path.with_name("copy.db")
    shutil.copy(path, copy)
    return copy


def _claim(path: Path, one_step: bool, limit: int = 100, max_age: float = 3600) -> list[Claimed]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        now = NOW
        got = sqlite_rows.claim(
            conn, owner="w", limit=limit, now=now, until=now + 30, max_age=max_age,
            commit=True, one_step=one_step,
        )  # fmt: skip
        conn.execute("COMMIT")
        return got
    finally:
        conn.close()


def _comparable(claims: list[Claimed]) -> list[tuple[Any, ...]]:
    """A claim without its random token (each path draws its own)."""
    for c in claims:
        assert c.claim.endswith(f":{c.row}")
    return [
        (c.row, c.message_id, c.message_json, c.raw, c.attempts, c.created, c.pin,
         c.committed, c.digest)
        for c in claims
    ]  # fmt: skip


def _rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row, its claim without the call's random token (column 9: ``row id``)."""
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    return [(*r[:9], r[9] and r[9].split(":")[1], *r[10:]) for r in found]


def test_a_claim_reads_the_same_rows_byte_for_byte_in_the_same_order(tmp_path: Path) -> None:
    one = _file(tmp_path, CONTENTS)
    other = _copy(one)

    fast, slow = _claim(one, one_step=True), _claim(other, one_step=False)

    assert _comparable(fast) == _comparable(slow)
    # oldest due first (the reverse of the ids), every content as stored
    assert [c.row for c in fast] == [5, 4, 3, 2, 1]
    assert [(c.message_json, c.raw, c.digest) for c in reversed(fast)] == CONTENTS
    assert all(type(c.message_json) is bytes and type(c.created) is float for c in fast)
    # what the lease wrote is the same too, but for the tokens
    assert _rows(one) == _rows(other)


def test_limits_and_too_old_rows_are_the_same_on_both_paths(tmp_path: Path) -> None:
    one = _file(tmp_path, CONTENTS * 3)
    with sqlite3.connect(one) as conn:  # the six due first are too old to try
        conn.execute("UPDATE outbox SET created = created - 7200 WHERE id >= 10")
    conn.close()
    other = _copy(one)

    fast = _claim(one, one_step=True, limit=4, max_age=3600)
    slow = _claim(other, one_step=False, limit=4, max_age=3600)

    assert _comparable(fast) == _comparable(slow)
    assert [c.row for c in fast] == [9, 8, 7, 6]  # three passes: 4 dead, 2 dead + 2, 2
    states = {r[0]: r[2] for r in _rows(one)}
    assert [row for row, state in states.items() if state == "dead"] == list(range(10, 16))
    assert _rows(one) == _rows(other)


class _Steps:
    """A connection that counts what costs a GIL hand-over in the sqlite3 module: a step
    per row a statement returns (and one to finish it), a step per parameter set of
    ``executemany``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, int]] = []  # (SQL, rows returned or params)

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        self.statements.append((sql, 1))  # no row returned: one step
        return _Rows(self, len(self.statements) - 1, self.conn.execute(sql, params))

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        params = list(params)
        self.statements.append((sql, len(params)))
        return self.conn.executemany(sql, params)


class _Rows:
    def __init__(self, steps: _Steps, at: int, cursor: sqlite3.Cursor) -> None:
        self.steps, self.at, self.cursor = steps, at, cursor
        self.rowcount = cursor.rowcount

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        found = self.cursor.fetchall()
        sql, _ = self.steps.statements[self.at]
        self.steps.statements[self.at] = (sql, len(found))
        return found


def _claim_counted(path: Path, one_step: bool, limit: int = 60) -> tuple[list[Claimed], _Steps]:
    steps = _Steps(sqlite3.connect(path, isolation_level=None))
    try:
        got = sqlite_rows.claim(
            cast(sqlite3.Connection, steps), owner="w", limit=limit, now=NOW, until=NOW + 30,
            max_age=3600, commit=False, one_step=one_step,
        )  # fmt: skip
    finally:
        steps.conn.close()
    return got, steps


def test_a_claim_is_a_few_steps_whatever_its_size(tmp_path: Path) -> None:
    """What made a claim of 28 rows take 8 ms beside a busy event loop: a step a row."""
    contents = CONTENTS * 12  # 60 rows
    path = _file(tmp_path, contents)
    other = _copy(path)
    got, steps = _claim_counted(path, one_step=True)
    assert [(c.message_json, c.raw, c.digest) for c in reversed(got)] == contents
    # the due rows, the lease, their columns, one read of their content
    assert len(steps.statements) == 4, steps.statements
    assert all(n <= 1 for _, n in steps.statements), steps.statements
    # before: a step a row, three times over (the counting sees them)
    _, by_row = _claim_counted(other, one_step=False)
    assert sum(n for _, n in by_row.statements) >= 3 * 60


def test_large_content_is_read_in_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = CONTENTS * 12  # 60 rows, each slice of 30 KB holds two to six of them
    path = _file(tmp_path, contents)
    monkeypatch.setattr(sqlite_rows, "_SLICE", 30_000)
    got, steps = _claim_counted(path, one_step=True)
    assert [(c.message_json, c.raw, c.digest) for c in reversed(got)] == contents
    reads = [sql for sql, _ in steps.statements if "group_concat" in sql]
    assert 3 <= len(reads) <= 40  # cut, but not a read per row
    assert all(n <= 1 for _, n in steps.statements)


def test_results_write_the_same_rows_as_one_statement_as_a_row_at_a_time(
    tmp_path: Path,
) -> None:
    one = _file(tmp_path, CONTENTS)
    other = _copy(one)
    now = time.time()
    outcomes = [  # state, next_at, provider, error, pin
        ("sent", None, "smtp", None, None),
        ("queued", now + 61.123456789, None, "451 try later \u2014 \u00e9\"'\\", "resend"),
        ("failed", None, None, "550 \U0001f4e7 no such user", None),
        ("unknown", None, "api", "timeout after DATA", None),
    ]
    written = {}
    for path, one_step in ((one, True), (other, False)):
        claims = _claim(path, one_step=True)
        params = [
            (state, at, provider, error, now, pin, c.row, c.claim)
            for c, (state, at, provider, error, pin) in zip(claims, outcomes, strict=False)
        ]
        lost = claims[4]  # taken over by another worker meanwhile
        params.append(("sent", None, None, None, now, None, lost.row, "someone else"))
        steps = _Steps(sqlite3.connect(path, isolation_level=None))
        try:
            steps.execute("BEGIN")
            conn = cast(sqlite3.Connection, steps)
            written[one_step] = sqlite_rows.finish(conn, params[:4], one_step=one_step)
            # a group with a lost claim is written again a row at a time, to say which
            written[one_step] += sqlite_rows.finish(conn, params, one_step=one_step)
            steps.execute("COMMIT")
        finally:
            steps.conn.close()
        if one_step:  # one statement a group, then the fallback's five of a row each
            assert [sql for sql, _ in steps.statements if "json_each" in sql] == [
                sqlite_rows._FINISH_JSON
            ] * 2
            assert [n for sql, n in steps.statements if sql == sqlite_rows._FINISH] == [1] * 5
            assert all(n == 1 for _, n in steps.statements)
    # the second time, only the 'unknown' row takes its result (a late report may settle
    # it), and the lost claim is refused
    assert written[True] == written[False] == [True] * 4 + [False, False, False, True, False]
    # tokens aside, every column the same (next_at exact: JSON numbers round-trip)
    assert _rows(one) == _rows(other)
    by_state = {r[2]: r for r in _rows(one)}
    assert by_state["queued"][6] == now + 61.123456789
    assert by_state["queued"][13] == "resend"
    assert by_state["failed"][12] == "550 \U0001f4e7 no such user"


def test_a_result_is_found_by_its_id_not_by_scanning_rows_in_flight(tmp_path: Path) -> None:
    """With thousands of 'unknown' rows, a result must stay a primary-key lookup: without
    statistics (an outbox is never ANALYZEd) the planner would pick the (state,
    lease_until) index and scan those rows for each result."""
    path = _file(tmp_path, CONTENTS)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO outbox (message_id, state, created, updated, next_at, claim)"
            " VALUES (?, 'unknown', 0, 0, 0, ?)",
            [(f"<u{i}@test>", f"t:{i}") for i in range(3000)],
        )
        for sql in (sqlite_rows._FINISH_JSON, sqlite_rows._META.format("?, ?")):
            plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))]
            outbox = [p for p in plan if " outbox " in f" {p} " or " o " in f" {p} "]
            assert outbox and all("INTEGER PRIMARY KEY" in p for p in outbox), plan


def test_the_few_step_path_needs_a_utf8_file(tmp_path: Path) -> None:
    utf8 = sqlite3.connect(tmp_path / "a.db")
    utf16 = sqlite3.connect(tmp_path / "b.db")
    utf16.execute("PRAGMA encoding = 'UTF-16le'")
    utf16.execute("CREATE TABLE t (x)")
    try:
        assert sqlite_rows.one_step_supported(utf8)
        assert not sqlite_rows.one_step_supported(utf16)
    finally:
        utf8.close()
        utf16.close()


def test_content_stored_as_text_is_read_as_its_utf8_bytes(tmp_path: Path) -> None:
    """A value written as text (a hand-made or migrated row) is counted in bytes, so
    the concatenation still cuts apart where it should."""
    path = _file(tmp_path, CONTENTS[:2])
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE outbox_body SET message = ? WHERE id = 2", ('{"s": "caf\u00e9 \u2709"}',)
        )
    conn.close()
    got = {c.row: c for c in _claim(path, one_step=True)}
    assert got[2].message_json == '{"s": "caf\u00e9 \u2709"}'.encode()
    assert (got[1].message_json, got[1].raw, got[1].digest) == CONTENTS[0]
