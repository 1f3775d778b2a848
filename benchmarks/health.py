"""The shared health store: what it costs per send, and what it saves in an outage.

    .venv/bin/python benchmarks/health.py            # the full run (docs/benchmarks.md)
    .venv/bin/python benchmarks/health.py --quick    # a short smoke run

1. Overhead per send (in-process, memory providers, so only the routing is timed): the
   memory store against the Redis store on a healthy provider (no Redis I/O: the local
   copy answers), and with a rate limit (one Lua call per send), in interleaved rounds;
   p50 and p90 of each send's time, and the difference to the memory store.
2. An outage with 1, 4 and 8 worker processes (tests/health/worker.py), each sending
   through a hung primary (accepts TCP, never greets) and a real backup (aiosmtpd), with
   the memory store and with Redis: how many times the primary was tried by sends, how
   many probes reached it, and what the callers waited (sum and worst send).

Redis and the SMTP servers are the test suite's own kit (a redis-server on a loopback
port in a temp folder; `make bench` installs it with apt-get when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.health.redis_kit import RedisServer  # noqa: E402

from mailer import Mailer, Message  # noqa: E402
from mailer.testing import (  # noqa: E402
    ScriptedProvider,
    SilentServer,
    SMTPTestServer,
)

WORKER = ROOT / "tests" / "health" / "worker.py"


async def _per_send(health: dict[str, Any], limit: dict[str, Any] | None, n: int) -> list[float]:
    primary = ScriptedProvider("primary", rate_limit=limit)
    message = Message(sender="app@example.com", to=["u@example.org"], text="hi")
    async with Mailer([primary, ScriptedProvider("backup")], health=health) as m:
        for _ in range(200):  # warm up: connections, script cache
            await m.send(message)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await m.send(message)
            times.append(time.perf_counter() - started)
    return times


def overhead(redis: RedisServer, n: int, rounds: int) -> dict[str, dict[str, float]]:
    big = {"messages": 1_000_000, "per": 1}
    cases = {
        "memory store": ({}, None),
        "redis store": ({"store": redis.url, "prefix": "bench"}, None),
        "memory store + rate_limit": ({}, big),
        "redis store + rate_limit": ({"store": redis.url, "prefix": "bench"}, big),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, (health, limit) in cases.items():
            samples[name] += asyncio.run(_per_send(health, limit, n))
    out = {}
    base = statistics.median(samples["memory store"])
    for name, values in samples.items():
        q = statistics.quantiles(values, n=10)
        p50 = statistics.median(values)
        out[name] = {"p50_us": p50 * 1e6, "p90_us": q[8] * 1e6, "vs_memory_us": (p50 - base) * 1e6}
    return out


def outage(redis: RedisServer | None, processes: int, sends: int, tmp: Path) -> dict[str, Any]:
    hung = SilentServer().start()
    backup = SMTPTestServer(auth=False).start()
    prefix = f"bench{time.monotonic_ns()}"
    health: dict[str, Any] = {"failure_threshold": 3, "cooldown": 1.0, "refresh": 0.1}
    if redis is not None:
        health |= {"store": redis.url, "prefix": prefix}

    def smtp(port: int, name: str) -> dict[str, Any]:
        return {"type": "smtp", "name": name, "config": {
            "host": "127.0.0.1", "port": port, "name": "client.test", "connection_timeout": 2,
            "greeting_timeout": 2, "socket_timeout": 3}}  # fmt: skip

    config = {
        "providers": [smtp(hung.port, "primary"), smtp(backup.port, "backup")],
        "health": health,
        "budget": {"pre_commit": 0.5, "max": 1.0},
        "send_timeout": 20,
    }
    go = tmp / f"go-{prefix}"
    procs, outs = [], []
    try:
        for i in range(processes):
            out = tmp / f"{prefix}-{i}.json"
            spec = tmp / f"{prefix}-{i}.spec.json"
            spec.write_text(json.dumps({"config": config, "sends": sends, "interval": 0.02,
                                        "go": str(go), "out": str(out)}))  # fmt: skip
            outs.append(out)
            with open(f"{out}.stderr", "wb") as stderr:  # never an unread pipe
                procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec)],
                                              stderr=stderr))  # fmt: skip
        deadline = time.monotonic() + 120
        while not all(Path(f"{o}.ready").exists() for o in outs):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not get ready")
            time.sleep(0.05)
        started = time.monotonic()
        go.write_text("go")
        for p in procs:
            p.wait(timeout=300)
        elapsed = time.monotonic() - started
        results = [json.loads(o.read_text()) for o in outs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        hung.stop()
        backup.stop()
    tried = [a for r in results for s in r["sends"] for a in s["attempts"] if a[0] == "primary"]
    waits = [s["took"] for r in results for s in r["sends"]
             if any(a[0] == "primary" for a in s["attempts"])]  # fmt: skip
    probes = sum(
        1 for r in results for _, _, line in r["log"] if "probing in the background" in line
    )
    failed = sum(1 for r in results for s in r["sends"] if "error" in s)
    return {
        "store": "redis" if redis is not None else "memory",
        "processes": processes,
        "sends": sum(len(r["sends"]) for r in results),
        "failed": failed,
        "seconds": round(elapsed, 2),
        "primary_tried_by_sends": len(tried),
        "probes": probes,
        "caller_wait_total_s": round(sum(waits), 2),
        "caller_wait_max_s": round(max(waits, default=0.0), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    n, rounds, sends = (500, 2, 40) if args.quick else (3000, 5, 100)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        redis = RedisServer(tmp / "redis").start()
        try:
            costs = overhead(redis, n, rounds)
            runs = [outage(store, k, sends, tmp) for k in (1, 4, 8) for store in (None, redis)]
        finally:
            redis.stop()
    if args.json:
        print(json.dumps({"overhead": costs, "outage": runs}, indent=2))
        return
    print(f"Overhead per send ({n} sends x {rounds} rounds, memory providers)")
    print(f"{'case':<28}{'p50 us':>10}{'p90 us':>10}{'vs memory':>12}")
    for name, row in costs.items():
        print(f"{name:<28}{row['p50_us']:>10.1f}{row['p90_us']:>10.1f}"
              f"{row['vs_memory_us']:>+12.1f}")  # fmt: skip
    print(f"\nHung primary, {sends} sends per process (cooldown 1 s, budget 0.5 s)")
    cols = ["processes", "store", "sends", "failed", "seconds", "primary_tried_by_sends",
            "probes", "caller_wait_total_s", "caller_wait_max_s"]  # fmt: skip
    print(" | ".join(cols))
    for run in runs:
        print(" | ".join(str(run[c]) for c in cols))


if __name__ == "__main__":
    main()
