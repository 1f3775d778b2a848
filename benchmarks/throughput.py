"""Throughput (msg/s) of 2 KB messages into Postfix's C smtp-sink, 1 and 5 connections.

Side by side in one run, medians of several interleaved rounds:

* ours       - mailer.Mailer over the SMTP provider (pool=True, max_connections=N), every
               message built as a mailer.Message and submitted concurrently;
* nodemailer - Nodemailer's pool (pool: true, maxConnections: N), all submitted at once;
* aiosmtplib - N reused aiosmtplib connections, a stdlib EmailMessage built per send and
               sent with send_message (like for like: every client builds each message);
* aiosmtplib raw - the same connections sending one pre-rendered message with sendmail
               (the transport alone, aiosmtplib's best case; for reference);
* C          - Postfix's smtp-source -d -s N (the upper bound for a client on this machine).

Then, in the same run, one connection over a 10 ms round trip (latency.py's case: ours
and Nodemailer through latency-proxy), and issue 25's targets, each as a ratio to
Nodemailer measured in this run: 1 connection >= 1.3x, 5 connections >= 2.0x, the
10 ms round trip >= 2.0x.

    .venv/bin/python benchmarks/throughput.py [--rounds 5] [--count 3000] [--quick]
    .venv/bin/python benchmarks/throughput.py --rtt-rounds 0     # without the round trip
    .venv/bin/python benchmarks/throughput.py --before cb7025f   # and that commit, in turn
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import latency
from _common import (
    HOST,
    POSTFIX_SINK,
    export_src,
    machine,
    median_of,
    nodemailer_cases,
    num,
    ours_available,
    postfix_sink,
    ratio,
    rounds_of,
    run_worker,
    table,
    verdict,
)

BODY = 2048


def c_source(port: int, conns: int, count: int) -> dict[str, Any]:
    cmd = [str(POSTFIX_SINK), "source", "-d", "-s", str(conns), "-l", str(BODY)]
    cmd += ["-m", str(count), f"{HOST}:{port}"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "smtp-source timed out"}
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.decode(errors="replace").strip()[-200:]}
    return {"elapsed": elapsed, "count": count, "rate": count / elapsed}


def run(
    rounds: int,
    count: int,
    conns_list: list[int],
    node_versions: list[str],
    breakdown: bool = False,
    before: str | None = None,
) -> dict[str, Any]:
    print(f"throughput: {machine()}")
    print(f"  {rounds} rounds; {count} messages per round per client ({count * 5} for C);")
    print(f"  body {BODY} bytes; warm pool before timing; medians of rounds")
    unavailable = ours_available()
    if unavailable:
        print(f"  ours: {unavailable}")
    summary: dict[str, Any] = {}
    with postfix_sink() as port:
        for conns in conns_list:
            print(f"-- {conns} connection(s), smtp-sink on {HOST}:{port}")
            cases: dict[str, Any] = {}
            if not unavailable:
                cases["ours"] = lambda c=conns: run_worker(["ours", HOST, port, c, count, BODY])
            if before and not unavailable:
                src = export_src(before)
                cases["ours before"] = lambda c=conns, s=src: run_worker(
                    ["ours", HOST, port, c, count, BODY], src=s
                )
            if breakdown and not unavailable:
                for variant in ("prerendered", "provider"):
                    cases[f"ours {variant}"] = lambda c=conns, v=variant: run_worker(
                        [f"ours-{v}", HOST, port, c, count, BODY]
                    )
            node_args = ["send", HOST, port, conns, count, BODY]
            cases.update(nodemailer_cases(node_versions, lambda a=node_args: a))
            cases["aiosmtplib"] = lambda c=conns: run_worker(
                ["aiosmtplib", HOST, port, c, count, BODY]
            )
            cases["aiosmtplib raw"] = lambda c=conns: run_worker(
                ["aiosmtplib-raw", HOST, port, c, count, BODY]
            )
            cases["C smtp-source"] = lambda c=conns: c_source(port, c, count * 5)
            results = rounds_of(cases, rounds)
            summary[conns] = {name: median_of(res, "rate") for name, res in results.items()}
            for name in ("ours", "ours before"):
                for key in ("cpu_us", "gc_us"):
                    summary[conns][f"{name} {key}"] = median_of(results.get(name, []), key)
            # Rounds are paired in time: the median of per-round ratios is steadier than
            # the ratio of medians when the machine's speed drifts during the run.
            for ref in ("nodemailer", "aiosmtplib"):
                pairs = zip(results.get("ours", []), results[ref], strict=True)
                ratios = [
                    o["rate"] / r["rate"]
                    for o, r in pairs
                    if "error" not in o and "error" not in r and r.get("rate")
                ]
                summary[conns][f"paired ours/{ref}"] = statistics.median(ratios) if ratios else None
            summary[conns].setdefault("ours", None)
    print()
    print(f"Throughput, msg/s (median of {rounds} rounds, {count} msgs/round, 2 KB body)")
    rows = []
    for conns, s in summary.items():
        rows.append(
            [
                str(conns),
                num(s["ours"]),
                num(s["nodemailer"]),
                num(s["aiosmtplib"]),
                num(s["aiosmtplib raw"]),
                num(s["C smtp-source"]),
                ratio(s["ours"], s["nodemailer"]),
                ratio(s["ours"], s["aiosmtplib"]),
                ratio(s["ours"], s["aiosmtplib raw"]),
                ratio(s["ours"], s["C smtp-source"]),
            ]
        )
    headers = ["conns", "ours", "nodemailer", "aiosmtplib", "aio raw", "C"]
    headers += ["ours/node", "ours/aio", "ours/aio raw", "ours/C"]
    print(table(headers, rows))
    for conns, s in summary.items():
        print(
            f"{conns} conn(s): ours used {num(s.get('ours cpu_us'))} us of CPU a message, "
            f"{num(s.get('ours gc_us'))} us of it in the garbage collector"
        )
    if before:
        print(f"Before and after in this run (ours before = commit {before}):")
        for conns, s in summary.items():
            print(
                f"  {conns} conn(s): before {num(s.get('ours before'))} msg/s "
                f"({ratio(s.get('ours before'), s['nodemailer'])} nodemailer), "
                f"after {num(s['ours'])} msg/s ({ratio(s['ours'], s['nodemailer'])}); "
                f"after/before {ratio(s['ours'], s.get('ours before'))}; CPU per message "
                f"{num(s.get('ours before cpu_us'))} -> {num(s.get('ours cpu_us'))} us"
            )
    if breakdown and not unavailable:
        print("Where ours spends its time (msg/s; the difference is the cost of that layer):")
        for conns, s in summary.items():
            full, pre, prov = s.get("ours"), s.get("ours prerendered"), s.get("ours provider")
            cost = [
                f"build+render {num(1e6 / full - 1e6 / pre, ',.0f')} us/msg"
                if full and pre
                else "",
                f"Mailer {num(1e6 / pre - 1e6 / prov, ',.0f')} us/msg" if pre and prov else "",
                f"provider+wire {num(1e6 / prov, ',.0f')} us/msg" if prov else "",
            ]
            print(
                f"  {conns} conn(s): full {num(full)}, prerendered {num(pre)}, "
                f"provider alone {num(prov)} -> " + ", ".join(c for c in cost if c)
            )
    extra = [n for n in summary[conns_list[0]] if n.startswith("nodemailer@")]
    for n in extra:
        print(
            f"{n}: "
            + ", ".join(
                f"{c} conn(s) {num(s[n])} msg/s (ours/{n} {ratio(s['ours'], s[n])})"
                for c, s in summary.items()
            )
        )
    for conns, s in summary.items():
        print(
            f"{conns} conn(s), median of per-round ratios: "
            f"ours/nodemailer {num(s.get('paired ours/nodemailer'), '.2f')}x, "
            f"ours/aiosmtplib {num(s.get('paired ours/aiosmtplib'), '.2f')}x"
        )
    return summary


#: issue 25's targets: ours / Nodemailer, per number of connections
TARGETS = {1: 1.3, 5: 2.0}
#: and over one connection with a 10 ms round trip
RTT_TARGET = 2.0


def targets(summary: dict[Any, Any], rtt: dict[str, Any] | None) -> None:
    """Issue 25's targets from this run's figures; C smtp-source beside them."""
    print()
    print("Targets (issue 25), ours / Nodemailer in this run:")
    for conns, goal in TARGETS.items():
        s = summary.get(conns)
        if s is None:
            continue
        ours, node = s.get("ours"), s.get("nodemailer")
        paired = s.get("paired ours/nodemailer")
        ok = None if ours is None or not node else ours >= goal * node
        print(
            f"  {conns} conn(s) >= {goal}x nodemailer: {verdict(ok)} "
            f"(ratio of medians {ratio(ours, node)}; median of per-round ratios "
            f"{num(paired, '.2f')}x; ours {num(ours)} msg/s, nodemailer {num(node)}, "
            f"C smtp-source {num(s.get('C smtp-source'))})"
        )
    if rtt is not None:
        ours, node = rtt.get("ours"), rtt.get("nodemailer")
        ok = None if ours is None or not node else ours >= RTT_TARGET * node
        print(
            f"  1 conn, {rtt['rtt'] * 1000:.1f} ms round trip >= {RTT_TARGET}x nodemailer: "
            f"{verdict(ok)} ({ratio(ours, node)}; ours {num(ours, ',.1f')} msg/s, "
            f"nodemailer {num(node, ',.1f')})"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--conns", type=int, nargs="+", default=[1, 5])
    ap.add_argument(
        "--nodemailer",
        nargs="+",
        default=["latest"],
        help="Nodemailer versions to compare (the first-named 'latest' is the target)",
    )
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time ours with messages pre-rendered, and the provider without the Mailer",
    )
    ap.add_argument(
        "--before",
        metavar="REV",
        help="also time ours at this commit (its src/ exported), for a before/after",
    )
    ap.add_argument(
        "--rtt-rounds",
        type=int,
        default=3,
        help="rounds of the 10 ms round-trip case (latency.py's, 200 messages); 0: skip it",
    )
    ap.add_argument("--quick", action="store_true", help="1 round of 300 messages")
    args = ap.parse_args(argv)
    rtt_count = 200
    if args.quick:
        args.rounds, args.count, rtt_count = 1, 300, 30
        args.rtt_rounds = min(args.rtt_rounds, 1)
    summary = run(args.rounds, args.count, args.conns, args.nodemailer, args.breakdown, args.before)
    rtt = None
    if args.rtt_rounds > 0:
        print()
        rtt = latency.run(args.rtt_rounds, rtt_count, 5.0, ["latest"])
    targets(summary, rtt)
    return {"throughput": summary, "rtt": rtt}


if __name__ == "__main__":
    main()
