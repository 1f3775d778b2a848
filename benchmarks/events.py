"""Delivery events and the suppression list: the three figures issue 22 asks for.

1. **The suppression check** per recipient: what a send pays before routing (the copy's
   freshness check, the envelope's recipients, the look-up in a list of ``--entries``
   addresses), for messages of 1 and 10 recipients; beside it, in the same run, a bare
   ``dict`` look-up per recipient (the floor). Target: p50 at most 20 µs per recipient.
2. **Send overhead**: sequential sends through a memory provider (no network, so the
   check's share is the largest it can be), the list on (``--entries`` addresses, a
   SQLite store being refreshed in the background) against off (``check = false``): two
   Mailers side by side, blocks of ``--sends`` alternating ``--rounds`` times; the ratio
   of the medians, the median of the ratios of adjacent blocks (robust to the load of
   other processes drifting during the run), the ratio of the fastest blocks (the
   least disturbed by that load), and the ratio of the CPU time the process used a
   send (what waiting for a shared CPU does not inflate). Target: at most 1.05.
3. **Ingest**: SendGrid-shaped webhook posts of 1,000 events (JSON text, as the ESP
   posts it: delivered, open, deferred, bounce, spamreport, with ``sg_event_id`` and our
   correlation key in ``custom_args``; one in ten only with ``sg_message_id``) parsed to
   DeliveryEvents and ingested, each post one ``ingest_events`` call, into a SQLite file
   and a Postgres database (a throwaway cluster, tests/pgcluster.py). Target: at least
   2,000 events/s on each.

    .venv/bin/python benchmarks/events.py [--entries 100000] [--sends 200] [--rounds 40]
                                          [--posts 20] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer import DeliveryEvent, Mailer, Message
from mailer._events import SuppressionEntry
from mailer._front.send import check_suppression
from mailer.testing import MemoryProvider

_SG_TYPES = {
    "delivered": "delivered",
    "open": "opened",
    "deferred": "deferred",
    "bounce": "bounced",
    "spamreport": "complained",
}
_MIX = ["delivered"] * 6 + ["open"] * 2 + ["deferred", "bounce", "spamreport"]


def _entries(n: int) -> list[SuppressionEntry]:
    now = time.time()
    return [SuppressionEntry(f"gone{i}@list.example", "bounced:hard", now) for i in range(n)]


async def bench_check(entries: int) -> None:
    async with Mailer([MemoryProvider("p")]) as mailer:
        await mailer.suppression.add_entries(_entries(entries))
        local = {e.address: e.reason for e in _entries(1000)}
        for rcpts in (1, 10):
            msg = Message(
                sender="a@example.com",
                to=[f"u{i}@example.org" for i in range(rcpts)],
                subject="s",
                text="t",
            )
            msg = msg.with_defaults({})
            addresses = msg.envelope_recipients
            ours, floor = [], []
            for _ in range(300):
                t0 = time.perf_counter()
                for _ in range(200):
                    await check_suppression(msg, True, mailer.suppression, mailer.unsubscribe)
                t1 = time.perf_counter()
                for _ in range(200):
                    {a: local[a] for a in addresses if a in local}
                t2 = time.perf_counter()
                ours.append((t1 - t0) / 200 / rcpts * 1e6)
                floor.append((t2 - t1) / 200 / rcpts * 1e6)
            print(
                f"check, {rcpts:2d} recipient(s), list of {entries:,}: "
                f"p50 {statistics.median(ours):.2f} µs per recipient "
                f"(p99 {sorted(ours)[int(len(ours) * 0.99)]:.2f}); "
                f"bare dict look-up {statistics.median(floor):.2f} µs"
            )


async def bench_send(entries: int, sends: int, rounds: int, *, check: bool = True) -> None:
    """Two Mailers alive side by side, one with the list and one without; blocks of
    ``sends`` sends alternate between them, ``rounds`` times, so a noisy neighbour hits
    both alike. The per-send medians of the blocks are compared. ``check=False`` turns
    the list off on both sides: the harness's own noise (an A/A run), the reference."""
    with tempfile.TemporaryDirectory() as d:
        store = f"sqlite:///{d}/mail.db"
        on_mailer = Mailer([MemoryProvider("p")], suppression={"store": store, "check": check})
        off_mailer = Mailer([MemoryProvider("p")], suppression={"store": store, "check": False})
        async with on_mailer, off_mailer:
            await on_mailer.suppression.add_entries(_entries(entries))
            n = 0

            async def block(mailer: Mailer) -> tuple[float, float]:
                nonlocal n
                messages = [
                    Message(
                        sender="a@example.com", to=[f"u{n + i}@example.org"], subject="s", text="t"
                    )
                    for i in range(sends)
                ]
                n += sends
                t0, c0 = time.perf_counter(), time.process_time()
                for m in messages:
                    await mailer.send(m)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                return wall / sends * 1e6, cpu / sends * 1e6

            await block(on_mailer)  # warm-up; the list loaded
            await block(off_mailer)
            on, off, on_cpu, off_cpu = [], [], [], []
            for r in range(rounds):
                pair = (on_mailer, off_mailer) if r % 2 else (off_mailer, on_mailer)
                for mailer in pair:
                    wall, cpu = await block(mailer)
                    (on if mailer is on_mailer else off).append(wall)
                    (on_cpu if mailer is on_mailer else off_cpu).append(cpu)
        m_on, m_off = statistics.median(on), statistics.median(off)
        c_on, c_off = statistics.median(on_cpu), statistics.median(off_cpu)
        pairs = statistics.median(a / b for a, b in zip(on, off, strict=True))
        label = "send" if check else "A/A reference, the list off on both sides:"
        print(
            f"{label} (memory provider, {rounds} alternating blocks of {sends} sends): "
            f"suppression off {m_off:.1f} µs, on {m_on:.1f} µs per send -> "
            f"{m_on / m_off:.3f}x; median of the {rounds} adjacent-pair ratios "
            f"{pairs:.3f}x; fastest blocks {min(on):.1f} vs {min(off):.1f} µs -> "
            f"{min(on) / min(off):.3f}x; CPU time {c_on:.1f} vs {c_off:.1f} µs a send -> "
            f"{c_on / c_off:.3f}x (list of {entries:,} in SQLite, refreshed every 1 s)"
        )


def sendgrid_post(batch: int, size: int, rng: random.Random) -> bytes:
    now = int(time.time())
    events = []
    for i in range(size):
        kind = rng.choice(_MIX)
        n = batch * size + i
        event: dict[str, Any] = {
            "email": f"user{n % 5000}@example.org",
            "timestamp": now - rng.randrange(600),
            "event": kind,
            "sg_event_id": f"sg-{batch}-{i}-{rng.getrandbits(40):x}",
            "sg_message_id": f"14c5d75ce93.dfd.64b469.filter0001.{n}.0",
            "smtp-id": f"<{n}@app.example.com>",
            "category": ["receipt"],
        }
        if i % 10:
            event["mailer_message_id"] = f"<{n}@app.example.com>"  # custom_args, echoed
        if kind == "bounce":
            event.update(type="bounce", status="5.1.1", reason="550 5.1.1 user unknown")
        events.append(event)
    return json.dumps(events).encode()


def parse_sendgrid(body: bytes) -> list[DeliveryEvent]:
    """A stand-in for the webhook engineer's parser: the same fields, the same checks."""
    out = []
    for e in json.loads(body):
        kind = _SG_TYPES.get(e["event"], "unknown")
        out.append(
            DeliveryEvent(
                type=kind,
                provider="sendgrid",
                recipient=e["email"],  # type: ignore[arg-type]
                timestamp=datetime.fromtimestamp(e["timestamp"], UTC),
                message_id=e.get("mailer_message_id"),
                provider_message_id=e["sg_message_id"].partition(".filter")[0],
                bounce="hard" if kind == "bounced" else None,
                reason=e.get("reason"),
                event_id=e["sg_event_id"],
                raw=e,
            )
        )
    return out


async def bench_ingest(name: str, url: str, posts: int) -> None:
    rng = random.Random(22)
    bodies = [sendgrid_post(b, 1000, rng) for b in range(posts)]
    async with Mailer([MemoryProvider("sendgrid")], suppression=url) as mailer:
        await mailer.ingest_events(parse_sendgrid(sendgrid_post(999, 10, rng)))  # schema, pool
        per_post = []
        t0 = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            report = await mailer.ingest_events(parse_sendgrid(body))
            per_post.append(time.perf_counter() - t)
            assert report.new == 1000, report
        total = time.perf_counter() - t0
        # the same posts again (an ESP's retries): every event a duplicate
        t1 = time.perf_counter()
        for body in bodies[:5]:
            assert (await mailer.ingest_events(parse_sendgrid(body))).duplicates == 1000
        dup = (time.perf_counter() - t1) / 5
    print(
        f"ingest into {name}: {posts * 1000 / total:,.0f} events/s over {posts} posts of "
        f"1,000 (p50 {statistics.median(per_post) * 1000:.0f} ms, max "
        f"{max(per_post) * 1000:.0f} ms a post); a retried post (all duplicates) "
        f"{dup * 1000:.0f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    await bench_check(args.entries)
    await bench_send(args.entries, args.sends, args.rounds)
    await bench_send(args.entries, args.sends, args.rounds, check=False)
    with tempfile.TemporaryDirectory() as d:
        await bench_ingest("SQLite", f"sqlite:///{d}/mail.db", args.posts)
    if not args.no_postgres:
        from tests.pgcluster import PostgresCluster

        with PostgresCluster() as cluster:
            await bench_ingest("Postgres", cluster.dsn, args.posts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
