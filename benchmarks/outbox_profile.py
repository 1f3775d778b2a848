"""Where the SQLite drain's CPU goes: cProfile of the event loop's thread and of the
writer thread, per drained message, beside a direct send's in the same process setup.

The drain of ``benchmarks/outbox.py`` (2 KB messages into Postfix's smtp-sink, one
pooled SMTP provider of 5 connections, the outbox at its defaults), profiled: the loop's
thread by one profiler around the drain, the SQLite writer's thread by another started
inside it (cProfile profiles the thread that enables it). Each case runs in its own
process; the profiler inflates small calls two to three times, so read the shares and
the counts per message, not the absolute microseconds.

    .venv/bin/python benchmarks/outbox_profile.py [--count 2000] [--top 40]
        [--case sqlite|direct|postgres] [--sort tottime|cumulative]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pgcluster

from _common import postfix_sink

from mailer import Mailer, Message
from outbox import messages, providers  # the same case as benchmarks/outbox.py

#: profiles of threads other than the loop's, made while the drain ran
THREAD_PROFILES: list[cProfile.Profile] = []


def profile_writer() -> None:
    """Run the SQLite writer thread's loop under its own profiler."""
    from mailer._outbox import sqlite_writer

    run = sqlite_writer._Writer.run

    def profiled(self: Any) -> None:
        prof = cProfile.Profile()
        THREAD_PROFILES.append(prof)
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()

    sqlite_writer._Writer.run = profiled  # type: ignore[method-assign]


async def drain(port: int, n: int, url: str, prof: cProfile.Profile) -> float:
    config = {"providers": providers(port), "outbox": {"url": url, "poll_interval": 0.05}}
    async with Mailer.from_config(config) as mailer:
        await mailer.outbox.stats()
        await mailer.send(messages(1)[0])
        for m in messages(n):
            await mailer.enqueue(m)
        for p in THREAD_PROFILES:
            p.clear()  # only the drain's share
        start = time.perf_counter()
        prof.enable()
        done = await mailer.drain(timeout=600)
        prof.disable()
        elapsed = time.perf_counter() - start
        assert done == {"sent": n}, done
    for p in THREAD_PROFILES:
        p.disable()
    return elapsed


async def direct(port: int, n: int, prof: cProfile.Profile) -> float:
    sem = asyncio.Semaphore(16)
    async with Mailer.from_config({"providers": providers(port)}) as mailer:
        await mailer.send(messages(1)[0])

        async def one(m: Message) -> None:
            async with sem:
                await mailer.send(m)

        msgs = messages(n)
        start = time.perf_counter()
        prof.enable()
        await asyncio.gather(*(one(m) for m in msgs))
        prof.disable()
        return time.perf_counter() - start


@contextlib.contextmanager
def store_url(case: str) -> Iterator[str | None]:
    if case == "direct":
        yield None
    elif case == "postgres":
        from tests.pgcluster import PostgresCluster

        with PostgresCluster() as pg:
            yield pg.dsn
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/profile.db"


def report(title: str, prof: cProfile.Profile, n: int, sort: str, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"== {title}: {total / n * 1e6:.0f} us a message under the profiler")
    stats.sort_stats(sort).print_stats(top)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--case", default="sqlite", choices=("sqlite", "postgres", "direct"))
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    if args.case == "sqlite":
        profile_writer()
    prof = cProfile.Profile()
    with postfix_sink() as port, store_url(args.case) as url:
        if url is None:
            elapsed = asyncio.run(direct(port, args.count, prof))
        else:
            elapsed = asyncio.run(drain(port, args.count, url, prof))
    print(f"{args.case}: {args.count / elapsed:.0f} msg/s under the profiler")
    report("the event loop's thread", prof, args.count, args.sort, args.top)
    for i, p in enumerate(THREAD_PROFILES):
        report(f"the SQLite writer thread {i}", p, args.count, args.sort, args.top)


if __name__ == "__main__":
    main()
