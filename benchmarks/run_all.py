"""Run every benchmark in turn: throughput (with the 10 ms round trip and issue 25's
targets), latency, failover, memory, telemetry.

    .venv/bin/python benchmarks/run_all.py            # the full run (docs/benchmarks.md)
    .venv/bin/python benchmarks/run_all.py --quick    # a short smoke run (under a minute)

--ref REV measures that commit's src/ rather than the working tree (MAILER_BENCH_REF=REV
does the same for a single script). --nodemailer latest 6 also measures Nodemailer 6 in
the latency script, for reference (the targets are about the latest; Nodemailer 6 manages
only about 22 msg/s on loopback, so it is left out of the throughput run). The full run
also times the throughput breakdown (pre-rendered messages; the provider alone).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = ["throughput", "latency", "failover", "memory", "telemetry"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short smoke run of every script")
    ap.add_argument("--nodemailer", nargs="+", default=["latest"])
    ap.add_argument("--only", nargs="+", choices=STEPS)
    ap.add_argument("--ref", help="measure this git commit's src/ instead of the working tree")
    args = ap.parse_args(argv)
    if args.ref:
        os.environ["MAILER_BENCH_REF"] = args.ref  # read by _common when first imported
    quick = ["--quick"] if args.quick else []
    node = ["--nodemailer", *args.nodemailer]
    started = time.monotonic()
    for name in STEPS:
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name} =====", flush=True)
        t0 = time.monotonic()
        module = importlib.import_module(name)
        extra = node if name == "latency" else []
        if name == "throughput" and not args.quick:
            extra = ["--breakdown"]
        module.main(quick + extra)
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
