"""Our SMTP client alone, this tree against another commit, round by round.

``throughput.py --before REF`` runs every client of the comparison (Nodemailer,
aiosmtplib, C) in each round; this runs only ours, the two trees alternating, many rounds
in a few minutes, and prints per tree the rate and the CPU a message (``cpu_us``, user +
system, with the collector's share ``gc_us``) as median and per round. On a shared
machine the CPU a message moves far less than the rate, so a change of a few per cent
needs many rounds to show, or not.

    .venv/bin/python benchmarks/ours_ab.py [--ref main] [--conns 5] [--rounds 8] [--count 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, export_src, postfix_sink, run_worker

BODY = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ref", default="main", help="the commit to compare with")
    parser.add_argument("--conns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    before = export_src(args.ref)
    runs: dict[str, list[dict[str, Any]]] = {args.ref: [], "this tree": []}
    with postfix_sink() as port:
        for _ in range(args.rounds):
            for name, src in ((args.ref, before), ("this tree", None)):
                out = run_worker(["ours", HOST, port, args.conns, args.count, BODY], src=src)
                if "error" in out or out.get("errors"):
                    raise SystemExit(f"{name}: {out}")
                runs[name].append(out)
    print(f"ours at {args.conns} connection(s), {args.count} messages, {args.rounds} rounds")
    for name, rounds in runs.items():
        for key, unit in (("rate", "msg/s"), ("cpu_us", "us"), ("gc_us", "us")):
            values = [r[key] for r in rounds]
            each = ", ".join(f"{v:.0f}" for v in values)
            print(f"  {name:>10} {key:6} median {statistics.median(values):8.1f} {unit}  [{each}]")


if __name__ == "__main__":
    main()
