"""Run every benchmark in turn: throughput, latency, failover, memory.

    .venv/bin/python benchmarks/run_all.py            # the full run recorded in docs/benchmarks.md
    .venv/bin/python benchmarks/run_all.py --quick    # a short smoke run (about a minute)

Extra arguments after --nodemailer are passed to the throughput and latency scripts
(e.g. --nodemailer latest 6 also measures Nodemailer 6 for reference).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import failover
import latency
import memory
import throughput


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short smoke run of every script")
    ap.add_argument("--nodemailer", nargs="+", default=["latest"])
    ap.add_argument("--only", nargs="+", choices=["throughput", "latency", "failover", "memory"])
    args = ap.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    node = ["--nodemailer", *args.nodemailer]
    steps = [
        ("throughput", lambda: throughput.main(quick + node)),
        ("latency", lambda: latency.main(quick + node)),
        ("failover", lambda: failover.main(quick)),
        ("memory", lambda: memory.main(quick)),
    ]
    started = time.monotonic()
    for name, step in steps:
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name} =====", flush=True)
        t0 = time.monotonic()
        step()
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
