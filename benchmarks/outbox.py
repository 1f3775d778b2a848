"""The durable outbox: enqueue latency, and worker throughput against sending directly.

Into Postfix's C smtp-sink on loopback, 2 KB messages, the SMTP provider pooled (5
connections) in every case, medians of interleaved rounds:

* direct        - ``mailer.send`` of N messages, 16 at once (the reference);
* sqlite        - ``enqueue`` N messages one after another (latency p50/p99: each is
                  committed, fsync'd, before it returns), then ``drain`` them with 16 at
                  once (throughput: claim, commit-point record, send, result, group-
                  committed), with the default ``synchronous=auto`` (fsync'd: enqueues
                  and commit-point records; not: results) and the default
                  ``commit_record = "auto"`` (the claim records the commit point, so it
                  is the claim that is fsync'd);
* sqlite-full   - the same with ``?synchronous=full`` (every transaction fsync'd);
* sqlite-normal - the same with ``?synchronous=normal`` (none is: durable against a
                  crashed process, not against power loss);
* postgres      - the same on a throwaway local cluster (tests/pgcluster.py) with a
                  user's defaults for durability: fsync and synchronous_commit on (the
                  run prints them), so every claim, commit-point record and result is
                  flushed before it returns.

    .venv/bin/python benchmarks/outbox.py [--count 2000] [--rounds 3] [--no-postgres]
        [--only direct,postgres] [--commit-wait] [--before REV]
        [--concurrency 16,auto,32] [--count-io]

Every case runs in a fresh process (the cases of a round one after another, rounds
interleaved), which also reports the CPU it used per message while timed (``cpu us``:
every thread of the process, the SQLite writer's included; not the database server's).

``--commit-wait`` also times, for every outbox send, how long its attempt waited at the
commit point for the commit-point record (the SMTP connection idles meanwhile, after
DATA's 354): p50, p90 and mean per case.

``--before REV`` also runs every case with that commit's ``src/`` (exported with ``git
archive``, first on ``PYTHONPATH``) in the same rounds: a before/after in one run, each
side against its own direct reference.

``--concurrency`` runs each outbox case once per worker concurrency listed (an int or
``auto``), interleaved in the same rounds (``sqlite c=32``); without it, the drain runs
with the configured default. Direct sending stays at 16 at once.

``--count-io`` also counts, per drained message, what the drain's speed is made of:
claims (and so their mean size), ``write()`` and reads on the sink's sockets (each one
syscall: how many commands the pool batched per write), and, sampled every 5 ms, the
sends under way in the Mailer (admitted by its gate, and waiting at it), and the CPU a
message of the event loop's thread and of the process's other threads (the SQLite
writer's) from /proc/self/task. The sampler costs a little CPU; compare counted runs
with counted runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pgcluster

from _common import ROOT, export_src, postfix_sink, worker_env

from mailer import Mailer, Message

CONCURRENCY = 16
#: seconds each outbox send's attempt spent in AttemptContext.commit (--commit-wait)
COMMIT_WAITS: list[float] = []
#: --count-io: counters of the timed drain (or direct run), reset when timing starts
IO: dict[str, float] = {}
IO_KEYS = (
    "claim_size", "claim_ms", "writes", "reads", "admitted", "waiting", "loop_us",
    "threads_us", "groups",
)  # fmt: skip
COUNT_IO = False


def count_io(port: int) -> None:
    """Count writes and reads on the sink's sockets, and claims, from now on (--count-io).

    Both patches are on classes, before any connection or store exists: the asyncio
    transport's ``write`` (one ``send()`` when nothing is buffered, as here) and its
    read callback (one ``recv()``), for sockets whose peer is the sink; the stores'
    ``claim`` (and how long each takes, from the call to its answer: claim ms)."""
    global COUNT_IO
    COUNT_IO = True
    from asyncio import selector_events

    from mailer._outbox.postgres import PostgresStore
    from mailer._outbox.sqlite import SQLiteStore

    cls: Any = selector_events._SelectorSocketTransport
    write, read = cls.write, cls._read_ready

    def sink(transport: Any) -> bool:
        peer = transport.get_extra_info("peername")
        return isinstance(peer, tuple) and peer[1] == port

    def counted_write(self: Any, data: Any) -> None:
        if sink(self):
            IO["writes"] = IO.get("writes", 0) + 1
        write(self, data)

    def counted_read(self: Any) -> None:
        if sink(self):
            IO["reads"] = IO.get("reads", 0) + 1
        read(self)

    cls.write, cls._read_ready = counted_write, counted_read
    for store in (SQLiteStore, PostgresStore):
        claim = store.claim

        async def counted_claim(self: Any, *args: Any, _claim: Any = claim, **kw: Any) -> Any:
            started = time.perf_counter()
            rows = await _claim(self, *args, **kw)
            IO["claim_s"] = IO.get("claim_s", 0) + time.perf_counter() - started
            IO["claims"] = IO.get("claims", 0) + 1
            IO["claimed"] = IO.get("claimed", 0) + len(rows)
            return rows

        store.claim = counted_claim  # type: ignore[method-assign]
    from mailer._outbox import sqlite_writer

    run = sqlite_writer._Writer._run

    def counted_run(self: Any, conn: Any, batch: Any, _run: Any = run) -> None:
        IO["groups"] = IO.get("groups", 0) + 1  # the writer's transactions
        _run(self, conn, batch)

    sqlite_writer._Writer._run = counted_run  # type: ignore[method-assign]


def thread_cpu() -> tuple[float, float]:
    """CPU seconds (user + system) so far: of this process's main thread (the event
    loop's, from /proc/self/task), and of all its other threads (the SQLite writer's,
    the loop's executor), as the process's total less the main thread's (a thread that
    ended has left /proc but not the total)."""
    stat = Path(f"/proc/self/task/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    main = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return main, time.process_time() - main


async def sample_gate(mailer: Mailer, samples: list[tuple[int, int]]) -> None:
    """Every 5 ms: the sends the Mailer's gate has admitted, and those waiting at it."""
    gate = mailer._admission
    assert gate is not None
    while True:
        await asyncio.sleep(0.005)
        samples.append((gate.active, gate.waiting))


def io_figures(
    n: int, samples: list[tuple[int, int]], threads: tuple[float, float]
) -> dict[str, float]:
    main, other = (b - a for a, b in zip(threads, thread_cpu(), strict=True))
    result = {
        "loop_us": main / n * 1e6,
        "threads_us": other / n * 1e6,
        "writes": IO.get("writes", 0) / n,
        "groups": IO.get("groups", 0) / n,
        "reads": IO.get("reads", 0) / n,
        "admitted": statistics.mean(a for a, _ in samples) if samples else 0.0,
        "waiting": statistics.mean(w for _, w in samples) if samples else 0.0,
    }
    if IO.get("claims"):
        result["claim_size"] = IO["claimed"] / IO["claims"]
        result["claim_ms"] = IO["claim_s"] / IO["claims"] * 1e3
    return result


def time_commit_waits() -> None:
    """Wrap AttemptContext.commit to record how long attempts with hooks (the outbox's)
    wait in it; direct sends have none and are not counted."""
    from mailer._attempt import AttemptContext

    commit = AttemptContext.commit

    async def timed(self: AttemptContext) -> None:
        started = time.perf_counter()
        await commit(self)
        if self.hooks:
            COMMIT_WAITS.append(time.perf_counter() - started)

    AttemptContext.commit = timed  # type: ignore[method-assign]


def providers(port: int) -> list[dict[str, Any]]:
    return [{"type": "smtp", "name": "sink", "config": {
        "host": "127.0.0.1", "port": port, "pool": True, "max_connections": 5,
        "name": "bench.local"}}]  # fmt: skip


def messages(n: int) -> list[Message]:
    body = "x" * 2048
    return [Message(sender="bench@example.com", to=[f"u{i}@example.org"], subject=f"m {i}",
                    text=body) for i in range(n)]  # fmt: skip


async def direct(port: int, n: int) -> dict[str, float]:
    msgs = messages(n)
    sem = asyncio.Semaphore(CONCURRENCY)
    async with Mailer.from_config({"providers": providers(port)}) as mailer:
        await mailer.send(messages(1)[0])  # warm the pool

        async def one(m: Message) -> None:
            async with sem:
                await mailer.send(m)

        samples: list[tuple[int, int]] = []
        sampler = asyncio.ensure_future(sample_gate(mailer, samples)) if COUNT_IO else None
        IO.clear()
        threads = thread_cpu()
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(m) for m in msgs))
        elapsed = time.perf_counter() - start
        result = {"rate": n / elapsed, "cpu_us": (time.process_time() - cpu) / n * 1e6}
        if sampler is not None:
            sampler.cancel()
            result |= io_figures(n, samples, threads)
        return result


async def outbox(port: int, n: int, url: str, concurrency: str | None) -> dict[str, float]:
    msgs = messages(n)
    box: dict[str, Any] = {"url": url, "poll_interval": 0.05}
    if concurrency is not None:
        box["concurrency"] = int(concurrency) if concurrency.isdigit() else concurrency
    config = {"providers": providers(port), "outbox": box}
    async with Mailer.from_config(config) as mailer:
        await mailer.outbox.stats()  # open (and create) the store
        await mailer.send(messages(1)[0])  # warm the pool
        latencies = []
        for m in msgs:
            t0 = time.perf_counter()
            await mailer.enqueue(m)
            latencies.append(time.perf_counter() - t0)
        COMMIT_WAITS.clear()
        samples: list[tuple[int, int]] = []
        sampler = asyncio.ensure_future(sample_gate(mailer, samples)) if COUNT_IO else None
        IO.clear()
        threads = thread_cpu()
        cpu, start = time.process_time(), time.perf_counter()
        done = await mailer.drain(timeout=600)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if sampler is not None:
            sampler.cancel()
        assert done == {"sent": n}, done
    latencies.sort()
    result = {
        "rate": n / elapsed,
        "cpu_us": cpu / n * 1e6,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }
    if sampler is not None:
        result |= io_figures(n, samples, threads)
    if COMMIT_WAITS:
        waits = sorted(COMMIT_WAITS)
        result |= {
            "wait_p50": waits[len(waits) // 2] * 1000,
            "wait_p90": waits[int(len(waits) * 0.9)] * 1000,
            "wait_mean": statistics.mean(waits) * 1000,
        }
    return result


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    from tests.pgcluster import PostgresCluster

    with PostgresCluster() as pg:
        yield pg.dsn


def case(
    name: str, port: int, n: int, url: str | None, concurrency: str | None
) -> dict[str, float]:
    """One case in this process (``--case``): direct, or a drain through ``url``."""
    if name == "direct":
        return asyncio.run(direct(port, n))
    assert url is not None
    return asyncio.run(outbox(port, n, url, concurrency))


def run_case(
    name: str,
    port: int,
    n: int,
    url: str | None,
    *,
    src: Path | None,
    commit_wait: bool,
    concurrency: str | None = None,
    io: bool = False,
) -> dict[str, float]:
    """:func:`case` in a fresh process (``src``: import ``mailer`` from that tree)."""
    cmd = [sys.executable, __file__, "--case", name, "--port", str(port), "--count", str(n)]
    cmd += ["--url", url] if url is not None else []
    cmd += ["--commit-wait"] if commit_wait else []
    cmd += ["--concurrency", concurrency] if concurrency is not None else []
    cmd += ["--count-io"] if io else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(src), cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--only", help="comma-separated cases to run (direct always runs)")
    ap.add_argument("--commit-wait", action="store_true", help="time the wait at the commit point")
    ap.add_argument("--before", metavar="REV", help="also run every case at this commit")
    ap.add_argument(
        "--concurrency", help="the drain's worker concurrency, comma-separated (int or auto)"
    )
    ap.add_argument("--count-io", action="store_true", help="count claims, writes, reads")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case is not None:
        if args.commit_wait:
            time_commit_waits()
        if args.count_io:
            count_io(args.port)
        print(json.dumps(case(args.case, args.port, args.count, args.url, args.concurrency)))
        return
    levels: list[str | None] = [None]
    if args.concurrency:
        levels = [c.strip() for c in args.concurrency.split(",")]
    only = None if args.only is None else {"direct", *args.only.split(",")}
    trees: dict[str, Path | None] = {"": None}
    if args.before:
        trees[" before"] = export_src(args.before)
    results: dict[str, list[dict[str, float]]] = {}
    with postfix_sink() as port, tempfile.TemporaryDirectory() as tmp, \
            (contextlib.nullcontext(None) if args.no_postgres else postgres()) as dsn:  # fmt: skip
        import asyncpg  # noqa: F401 - fail early when the driver is missing

        settings = "" if dsn is None else asyncio.run(_pg_settings(dsn))
        n = args.count
        for r in range(args.rounds):
            for suffix, src in trees.items():
                tag = f"{r}{suffix.strip()}"
                urls: dict[str, Any] = {
                    "direct": lambda: None,
                    "sqlite": lambda t=tag: f"sqlite:///{tmp}/auto-{t}.db",
                    "sqlite-full": lambda t=tag: f"sqlite:///{tmp}/full-{t}.db?synchronous=full",
                    "sqlite-normal": lambda t=tag: (
                        f"sqlite:///{tmp}/normal-{t}.db?synchronous=normal"
                    ),
                }
                if dsn is not None:
                    urls["postgres"] = lambda t=tag: asyncio.run(_pg_database(dsn, t))
                for name, url in urls.items():
                    if only is not None and name not in only:
                        continue
                    for level in [None] if name == "direct" else levels:
                        result = run_case(
                            name,
                            port,
                            n,
                            url(),
                            src=src,
                            commit_wait=args.commit_wait,
                            concurrency=level,
                            io=args.count_io,
                        )
                        label = name if level is None else f"{name} c={level}"
                        results.setdefault(label + suffix, []).append(result)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.count} messages of 2 KB into smtp-sink, direct {CONCURRENCY} at once, the "
          f"drain at {args.concurrency or 'its default'}, 5 SMTP connections; medians of "
          f"{args.rounds} rounds; load average {load}{settings}")  # fmt: skip
    if args.before:
        print(f"'before' cases: commit {args.before} (each against 'direct before')")
    print(
        f"{'case':21s} {'msg/s':>8s} {'x direct':>9s} {'cpu us':>7s}"
        f" {'enqueue p50':>12s} {'p99':>8s}"
    )
    for name, runs in results.items():
        ref = results["direct before" if name.endswith(" before") else "direct"]
        rate = statistics.median(x["rate"] for x in runs)
        # rounds are paired in time: the median of per-round ratios is steadier than
        # the ratio of medians on a machine whose speed drifts during the run
        paired = statistics.median(x["rate"] / d["rate"] for x, d in zip(runs, ref, strict=True))
        cpu = statistics.median(x["cpu_us"] for x in runs)
        p50 = statistics.median(x.get("p50", 0.0) for x in runs)
        p99 = statistics.median(x.get("p99", 0.0) for x in runs)
        lat = f"{p50:9.2f} ms {p99:6.2f} ms" if not name.startswith("direct") else ""
        if "wait_p50" in runs[0]:
            wait = [
                statistics.median(x[k] for x in runs) for k in ("wait_p50", "wait_p90", "wait_mean")
            ]
            lat += "   commit wait p50 {:.3f} p90 {:.3f} mean {:.3f} ms".format(*wait)
        if args.count_io:
            io = {k: statistics.median(x.get(k, 0.0) for x in runs) for k in IO_KEYS}
            lat += (
                "   claim {claim_size:.1f} rows {claim_ms:.2f} ms;"
                " writes {writes:.2f} reads {reads:.2f} a msg;"
                " gate admitted {admitted:.1f} waiting {waiting:.1f}; cpu us: loop thread"
                " {loop_us:.0f}, others {threads_us:.0f}; writer groups {groups:.2f}"
                " a msg".format(**io)
            )
        print(f"{name:21s} {rate:8.0f} {paired:8.2f}x {cpu:7.0f} {lat}")
    for name in [n for n in results if f"{n} before" in results]:
        # the two trees in the same rounds: the drain's own speed, whatever direct did
        after, before = results[name], results[f"{name} before"]
        gain = statistics.median(a["rate"] / b["rate"] for a, b in zip(after, before, strict=True))
        print(f"{name}: after/before {gain:.2f}x (median of per-round ratios)")


async def _pg_settings(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('wal_sync_method')"
        )
    finally:
        await conn.close()
    assert row is not None
    return f"; postgres fsync={row[0]} synchronous_commit={row[1]} wal_sync_method={row[2]}"


async def _pg_database(dsn: str, tag: str) -> str:
    """A fresh database on the cluster for one round's case; its DSN."""
    import asyncpg

    name = f"bench_{tag.replace(' ', '_')}_{int(time.time())}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


if __name__ == "__main__":
    main()
