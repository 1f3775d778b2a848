"""A tight loop run against another commit: the harness of the microbenchmarks.

A figure of a few microseconds is under the noise of a whole send on a shared machine;
it compares only as CPU time (``time.process_time``) of many calls, the two trees
interleaved run by run, each run in a fresh process. ``child`` is the program each run
executes (``python -c child COUNT``): it prints one JSON object, figure name -> value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from _common import export_src, worker_env


def run_child(child: str, src: Path | None, count: int) -> dict[str, float]:
    """One run of ``child`` with ``src`` first on the path (None: the working tree)."""
    out = subprocess.run(
        [sys.executable, "-c", child, str(count)],
        env=worker_env(src),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def compare(
    description: str,
    child: str,
    keys: Sequence[str],
    per: str,
    unit: str = "us",
    count: int = 20000,
) -> None:
    """The command line of a microbenchmark (``--ref``, ``--rounds``, ``--count``): runs
    ``child`` in both trees, interleaved, and prints each figure of ``keys`` as best
    (median) before and after, in ``unit`` (microseconds unless told) ``per`` (a call, a
    send)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ref", default="main", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=count)
    args = parser.parse_args()
    before_src = export_src(args.ref)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        runs["before"].append(run_child(child, before_src, args.count))
        runs["after"].append(run_child(child, None, args.count))
    print(f"{unit} {per}, best (median) of {args.rounds} runs of {args.count}; before = {args.ref}")
    width = max(len(key) for key in keys)
    for key in keys:
        line = []
        for side in ("before", "after"):
            values = [r[key] for r in runs[side]]
            line.append(f"{side} {min(values):.2f} ({statistics.median(values):.2f})")
        print(f"  {key:{width}} " + "  ".join(line))
