"""Failover overhead once the primary's breaker is open, vs sending to the backup alone.

Primary: "refused" (a closed loopback port) or "hung" (listens, so TCP connects, but never
greets; connection and greeting timeouts 0.5 s). Backup: Postfix's smtp-sink. Each round
is a fresh process holding two Mailers: one with only the backup, one with the dead
primary first and the backup second. It sends through the second until the primary's
breaker is open (cooldown 600 s, so it stays open), warms both, then alternates blocks of
25 sequential sends (each awaited before the next; each message built and rendered as
part of the send) between the two, so both see the same noise. Overhead = median time
per send with failover / backup alone - 1, per round; the median over rounds is reported.

    .venv/bin/python benchmarks/failover.py [--rounds 5] [--count 1000] [--quick]
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
    print(f"  {rounds} rounds; {count} sequential sends per round per Mailer; 2 KB body")
    unavailable = ours_available()
    if unavailable:
        print(f"  skipped: {unavailable}")
        return {}
    with postfix_sink() as backup, refusing_port() as refused, hung_server() as hung:
        cases = {
            "primary refused": lambda: run_worker(["failover", "refused", refused, backup, count]),
            "primary hung": lambda: run_worker(["failover", "hung", hung, backup, count]),
        }
        results = rounds_of(cases, rounds)
    print()
    print(f"Time per send, microseconds (median of {rounds} rounds, {count} sends per Mailer)")
    rows = []
    summary: dict[str, Any] = {}
    for name, res in results.items():
        alone = median_of(res, "alone_us")
        fo = median_of(res, "failover_us")
        over = median_of(res, "overhead")
        spread = [r["overhead"] for r in res if "overhead" in r]
        opened = median_of(res, "time_to_open")
        summary[name] = {"alone_us": alone, "failover_us": fo, "overhead": over}
        rows.append(
            [
                name,
                num(alone),
                num(fo),
                num(over, "+.1%"),
                ", ".join(format(x, "+.1%") for x in spread),
                num(opened, ".2f"),
            ]
        )
    headers = ["case", "backup alone", "with failover", "overhead", "per round"]
    print(table([*headers, "s to open breaker"], rows))
    for name, s in summary.items():
        over = s["overhead"]
        print(
            f"target failover overhead <= 5% ({name}): "
            f"{verdict(None if over is None else over <= 0.05)}"
        )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="1 round of 100 sends")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.count = 1, 100
    return run(args.rounds, args.count)


if __name__ == "__main__":
    main()
