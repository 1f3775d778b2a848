"""Workers killed with SIGKILL at each phase of a send, then a real ``mailer worker``
started on the same outbox: every message is delivered once, or is ``unknown`` and was
delivered at most once; none is lost, none is sent twice. And SIGTERM drains.

Real processes (the crash is a real SIGKILL), a real SMTP server keeping a ledger by
Message-ID, and the outbox file on disk between them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mailer import Mailer
from mailer.testing import SMTPTestServer

from .conftest import fast_outbox, make_message, smtp_entry
from .workers_kit import (
    HERE,
    enqueue,
    env,
    start_worker,
    states,
    stop_worker,
    wait_for,
    write_config,
)

N = 24


def kill_then_restart(config: Path, url: str, phase: str) -> tuple[dict[str, str], dict[str, str]]:
    """A worker SIGKILLed at ``phase`` (crash_worker.py), then a real ``mailer worker``
    run on the same outbox until nothing is queued or sending: the states at the kill
    and once settled."""
    crashed = subprocess.run(
        [sys.executable, str(HERE / "crash_worker.py"), str(config), phase],
        capture_output=True,
        timeout=60,
        env=env(),
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    before = states(url)
    worker = start_worker(config)
    try:
        settled = wait_for(
            lambda: not {"queued", "sending"} & set(states(url).values()), timeout=60
        )
    finally:
        code, log = stop_worker(worker)
    assert settled, states(url)
    assert code == 0, log[-2000:]
    return before, states(url)


@pytest.mark.parametrize(
    ("record", "phase"),
    [
        ("attempt", "claimed"),
        ("attempt", "before-io"),
        ("attempt", "committed"),
        ("attempt", "before-result"),
        ("claim", "claimed"),
        ("claim", "before-io"),
        ("claim", "before-result"),
    ],
)
def test_sigkill_at_each_phase_then_restart(
    record: str, phase: str, smtp: Callable[..., SMTPTestServer], tmp_path: Path, db_url: str
) -> None:
    """``record``: where the commit point is recorded (``commit_record``). With a record
    per attempt, a worker killed before any attempt started leaves its rows to be sent
    again; with the record made by the claim (the default without a rate limit), every
    row it held is ``unknown`` and was not delivered: the design's price, on purpose
    (docs/design-notes.md, "One durable write per claim")."""
    server = smtp()
    config, url = write_config(tmp_path, server.port, db_url, commit_record=record)
    ids = enqueue(config, N)

    before, after = kill_then_restart(config, url, phase)
    assert "sending" in before.values(), before  # it died holding claims
    ledger = server.received()
    assert set(after) == set(ids)  # nothing lost
    for mid in ids:
        assert ledger[mid] <= 1, f"{mid} delivered twice"
        if after[mid] == "sent":
            assert ledger[mid] == 1
        else:
            assert after[mid] == "unknown", (mid, after[mid])
    unknown = [mid for mid in ids if after[mid] == "unknown"]
    held = [mid for mid in ids if before[mid] == "sending"]
    if record == "claim" and phase in ("claimed", "before-io"):
        # the claim recorded the commit point: what it held is unknown, and undelivered
        assert sorted(unknown) == sorted(held), (unknown, held)
        assert all(ledger[mid] == 0 for mid in unknown)
    elif phase in ("claimed", "before-io"):
        assert not unknown, "nothing had crossed a commit point: all must be re-sent"
    elif phase == "committed":
        # recorded, then killed before crossing: unknown, and in fact not delivered
        assert unknown and any(ledger[mid] == 0 for mid in unknown)
    else:
        # accepted by the server, killed before the result: unknown, delivered once
        assert unknown and any(ledger[mid] == 1 for mid in unknown)


@pytest.mark.parametrize("record", ["attempt", "claim"])
def test_sigkill_with_sends_waiting_at_the_admission_gate(
    record: str, smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """The default concurrency (``auto``) holds more claimed sends than the Mailer's gate
    admits: a pool of 1 connection admits 4, and the worker holds 16. Killed when the
    first send finds the gate full: with the claim's record, exactly the rows held are
    ``unknown`` (at most ``concurrency``: what docs/outbox.md states), none delivered;
    with the per-attempt record (written after the gate), the rows waiting at the gate
    are sent again, and at most the gate's 4 are ``unknown``. Never twice, in both.

    Nothing can be delivered before the kill, whatever the machine's speed: the 16 sends
    start in one turn of the loop, and the fifth reaches the gate (no await on its way
    for an ordinary row) before the loop handles any I/O of the first four."""
    server = smtp()
    entry = smtp_entry("smtp", server.port, 1)
    entry["config"] |= {"pool": True, "max_connections": 1}
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = tmp_path / "mailer.json"
    outbox = fast_outbox(url, commit_record=record, lease="2s")
    config.write_text(
        json.dumps({"providers": [entry], "retry": {"attempts": 1}, "outbox": outbox})
    )
    ids = enqueue(config, N)

    before, after = kill_then_restart(config, url, "at-the-gate")
    held = [mid for mid in ids if before[mid] == "sending"]
    assert len(held) == 16, before  # auto: three times the gate's 4, at least 16
    ledger = server.received()
    assert set(after) == set(ids)
    unknown = [mid for mid in ids if after[mid] == "unknown"]
    for mid in ids:
        assert ledger[mid] <= 1, f"{mid} delivered twice"
        assert after[mid] in ("sent", "unknown"), (mid, after[mid])
        assert ledger[mid] == (1 if after[mid] == "sent" else 0), mid
    if record == "claim":
        assert sorted(unknown) == sorted(held)
    else:
        assert len(unknown) <= 4, unknown  # only sends past the gate had started
        assert set(unknown) <= set(held)


def test_sigterm_finishes_sends_under_way(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """Each message takes 1 s at the server; SIGTERM mid-run: the worker stops claiming,
    finishes what it has in flight (sent, not left sending) and exits 0."""
    server = smtp()
    server.state.fail("DATA_END", "delay:1.0:")
    config, url = write_config(tmp_path, server.port, f"sqlite:///{tmp_path / 'outbox.db'}")
    ids = enqueue(config, 40)
    worker = start_worker(config, "--concurrency", "4")
    try:
        assert wait_for(lambda: "sending" in states(url).values(), timeout=30)
    finally:
        code, log = stop_worker(worker)
    assert code == 0, log[-2000:]
    after = states(url)
    assert "sending" not in after.values(), after
    sent = [mid for mid in ids if after[mid] == "sent"]
    assert 1 <= len(sent) < len(ids)  # it finished the ones under way, and took no more
    assert all(after[mid] in ("sent", "queued") for mid in ids)
    assert server.received() == dict.fromkeys(sent, 1)
    assert "finishing the sends under way" in log


def test_four_workers_on_postgres_one_killed(
    smtp: Callable[..., SMTPTestServer], pg_url: str, tmp_path: Path
) -> None:
    """5,000 messages, 4 worker processes on one Postgres outbox, one SIGKILLed mid-run:
    nothing lost, nothing sent twice outside ``unknown``."""
    server = smtp()
    entry = smtp_entry("smtp", server.port, 1)
    entry["config"]["pool"] = True
    config = tmp_path / "mailer.json"
    config.write_text(
        json.dumps(
            {
                "providers": [entry],
                "retry": {"attempts": 1},
                "outbox": fast_outbox(pg_url, lease="2s", concurrency=8),
            }
        )
    )

    async def fill() -> list[str]:
        async with Mailer.from_config(config) as mailer:
            ids: list[str] = []
            for start in range(0, 5000, 100):
                async with anyio.create_task_group() as tg:
                    for i in range(start, start + 100):

                        async def one(i: int = i) -> None:
                            ids.append(await mailer.enqueue(make_message(i)))

                        tg.start_soon(one)
            return ids

    ids = anyio.run(fill, backend="asyncio")
    assert len(set(ids)) == 5000

    workers = [start_worker(config) for _ in range(4)]
    try:
        assert wait_for(lambda: sum(server.received().values()) >= 1000, timeout=120)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        # What it held, read before its lease (2 s, renewed every 0.67 s) can expire:
        # its slots' rows and the rows whose results it was still writing.
        held = pg_held(pg_url, workers[0].pid)
        assert wait_for(
            lambda: not {"queued", "sending"} & set(pg_states(pg_url).values()), timeout=240
        )
    finally:
        codes = [stop_worker(w) for w in workers[1:]]
    assert all(code == 0 for code, _ in codes), [log[-1000:] for _, log in codes]

    after = pg_states(pg_url)
    ledger = server.received()
    assert set(after) == set(ids)
    assert max(ledger.values()) == 1, "a message was delivered twice"
    for mid in ids:
        assert after[mid] in ("sent", "unknown"), (mid, after[mid])
        if after[mid] == "sent":
            assert ledger[mid] == 1
    unknown = {mid for mid, state in after.items() if state == "unknown"}
    # Only what the killed worker held may be unknown (the claim recorded the commit point
    # of all of it; commit_record = "auto" without a rate limit is "claim").
    assert unknown <= held, (sorted(unknown - held), len(held))
    assert len(held) <= 3 * 8, len(held)  # its 8 slots and the results being written


def pg_held(url: str, pid: int) -> set[str]:
    """The Message-IDs of the rows a worker process (by pid) holds in ``sending``."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT message_id FROM mailer_outbox WHERE state = 'sending' AND lease_owner LIKE %s",
            (f"%:{pid}:%",),
        ).fetchall()
    return {mid for (mid,) in rows}


def pg_states(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT message_id, state FROM mailer_outbox").fetchall()
    return {mid: state for mid, state in rows}
