"""Failover overhead once the primary's breaker is open, vs sending to the backup alone.

Primary: "refused" (a closed loopback port) or "hung" (listens, so TCP connects, but never
greets). Backup: Postfix's smtp-sink. The worker sends until the primary's breaker is open
(cooldown 600 s, so it stays open), warms the backup, then times COUNT sequential sends
(each awaited before the next); "backup alone" is a Mailer with only the backup. Cases are
interleaved round by round; the overhead is the ratio of the medians of time per send.

    .venv/bin/python benchmarks/failover.py [--rounds 5] [--count 500] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    hung_server,
    machine,
    median_of,
    num,
    ours_available,
    postfix_sink,
    refusing_port,
    rounds_of,
    run_worker,
    table,
    verdict,
)


def run(rounds: int, count: int) -> dict[str, Any]:
    print(f"failover: {machine()}")
    print(f"  {rounds} rounds; {count} sequential sends per round per case; 2 KB body")
    unavailable = ours_available()
    if unavailable:
        print(f"  skipped: {unavailable}")
        return {}
    with postfix_sink() as backup, refusing_port() as refused, hung_server() as hung:
        cases = {
            "backup alone": lambda: run_worker(["failover", "none", 0, backup, count]),
            "primary refused": lambda: run_worker(["failover", "refused", refused, backup, count]),
            "primary hung": lambda: run_worker(["failover", "hung", hung, backup, count]),
        }
        results = rounds_of(cases, rounds)
    per_send = {name: median_of(res, "per_send_us") for name, res in results.items()}
    base = per_send["backup alone"]
    print()
    print(f"Time per send, microseconds (median of {rounds} rounds, {count} sequential sends)")
    rows = []
    overheads: dict[str, float | None] = {}
    for name, value in per_send.items():
        over = None if value is None or not base else value / base - 1
        overheads[name] = over
        opened = median_of(results[name], "time_to_open")
        rows.append(
            [
                name,
                num(value, ",.0f"),
                "-" if name == "backup alone" else num(over, "+.1%"),
                "-" if name == "backup alone" else num(opened, ".2f"),
            ]
        )
    print(table(["case", "us/send", "overhead", "s to open breaker"], rows))
    for name in ("primary refused", "primary hung"):
        over = overheads[name]
        print(
            f"target failover overhead <= 5% ({name}): "
            f"{verdict(None if over is None else over <= 0.05)}"
        )
    return {"per_send_us": per_send, "overhead": overheads}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="1 round of 50 sends")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.count = 1, 50
    return run(args.rounds, args.count)


if __name__ == "__main__":
    main()
