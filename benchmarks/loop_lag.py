"""A starved event loop against the pre-commit budget, and what measuring its lag costs.

Three cases, each with a reference in the same run (``--ref``, default ``main``: that
commit's src/, exported as the other scripts do; "this tree" is the working tree):

1. **The profiled burst** (docs/benchmarks.md, the note at the end of "The profile: where
   the time went"): BURST sends of 2 KB started at once on one connection into Postfix's
   smtp-sink, under cProfile, which slows the process enough that the sends' first steps
   hold the loop past the 3 s budget. Errors (sends that failed: the client has no
   backup) per round; the rate is not comparable when one side fails fast.
2. **The cost**: COUNT sends without the profiler, at 1 and 5 connections: CPU time
   per message (``cpu_us``, which moves far less than the rate on a shared machine) and
   the rate, medians of interleaved rounds.
3. **The attempt's own bookkeeping**, in this process: an attempt opened, three step
   timeouts, two progress marks and the commit point, with ``budget.loop_lag`` on and off
   (microseconds per attempt, interleaved, best of 7 runs of 5,000; each attempt yields
   to the loop once, as a send does). It includes the loop turn, the same on both sides.

    .venv/bin/python benchmarks/loop_lag.py [--ref main] [--rounds 3] [--count 3000]
        [--burst 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    export_src,
    machine,
    median_of,
    num,
    postfix_sink,
    rounds_of,
    run_worker,
    table,
)

BODY = 2048


def profiled(port: int, count: int, src: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCH_PROFILE"] = str(Path(tmp) / "ours.prof")
        try:
            return run_worker(["ours", HOST, port, 1, count, BODY], timeout=600, src=src)
        finally:
            del os.environ["BENCH_PROFILE"]


def bookkeeping(n: int = 5000, rounds: int = 7) -> dict[bool, float]:
    """Microseconds per attempt of the AttemptContext calls one SMTP send makes, with
    ``loop_lag`` on and off, interleaved round by round (best of ``rounds``). Each attempt
    yields to the loop once, as a send does, so the heartbeat beats and cancelled timers
    are cleared as in a real run."""
    from mailer import _clock
    from mailer._attempt import AttemptContext

    async def one_round(loop_lag: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            now = _clock.now()
            state = AttemptContext.open(
                "p", deadline=now + 60, started=now, grace=0.5, budget=3.0, loop_lag=loop_lag
            )
            state.timeout(30.0)
            state.progress()
            state.timeout(30.0)
            state.progress()
            state.timeout(30.0)
            await state.commit()
            state.disarm()
            await asyncio.sleep(0)
        return (time.perf_counter() - t0) / n * 1e6

    async def go() -> dict[bool, float]:
        best = {True: float("inf"), False: float("inf")}
        for _ in range(rounds):
            for loop_lag in (True, False):
                best[loop_lag] = min(best[loop_lag], await one_round(loop_lag))
        return best

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the reference commit (default: main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=10_000)
    args = parser.parse_args()
    ref_src = export_src(args.ref)
    print(f"loop_lag: {machine()}")
    print(f"  reference: {args.ref} ({ref_src}); this tree: the working tree")

    with postfix_sink() as port:
        print(f"\n1. {args.burst} sends on one connection under cProfile, {args.rounds} rounds")
        burst = rounds_of(
            {
                f"{args.ref}": lambda: profiled(port, args.burst, ref_src),
                "this tree": lambda: profiled(port, args.burst, None),
            },
            args.rounds,
        )
        rows = []
        for name, samples in burst.items():
            errors = [str(s.get("errors", s.get("error"))) for s in samples]
            rows.append([name, ", ".join(errors), num(median_of(samples, "rate"))])
        print(table(["src", "errors per round", "msg/s (median)"], rows))

        print(f"\n2. the cost: {args.count} sends, no profiler, {args.rounds} rounds")
        cases = {}
        for conns in (1, 5):
            for name, src in ((args.ref, ref_src), ("this tree", None)):
                cases[f"{name} @{conns}"] = lambda conns=conns, src=src: run_worker(
                    ["ours", HOST, port, conns, args.count, BODY], src=src
                )
        cost = rounds_of(cases, args.rounds)
        rows = [
            [name, num(median_of(s, "cpu_us"), ".0f"), num(median_of(s, "rate")),
             str(sum(int(x.get("errors", 0)) for x in s))]
            for name, s in cost.items()
        ]  # fmt: skip
        print(table(["case", "cpu_us / msg", "msg/s", "errors"], rows))

    print("\n3. the attempt's bookkeeping per send (this tree, in-process)")
    best = bookkeeping()
    on, off = best[True], best[False]
    print(table(["budget.loop_lag", "us / attempt"],
                [["true (default)", f"{on:.2f}"], ["false", f"{off:.2f}"],
                 ["difference", f"{on - off:+.2f}"]]))  # fmt: skip


if __name__ == "__main__":
    main()
