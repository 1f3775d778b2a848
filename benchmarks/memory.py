"""Peak RSS above the idle process (a 50 MiB attachment, 10,000 sends queued), and the
longest event-loop stall while the attachment is sent.

Each case runs in a fresh process; the baseline is that process's peak RSS (VmHWM) after
its imports, the Mailer and one warm-up send, so the figure is what the work itself adds.
Into Postfix's smtp-sink. The attachment is 50 MiB of random bytes (incompressible; base64
makes it 68 MiB on the wire). Cases:

* ours attach-path  - Attachment(path=...): the library streams the file, in chunks;
* ours attach-path-dkim - the same, DKIM-signed (rsa-sha256, 2048 bits): one more pass
                      over the file for the body hash;
* ours attach-bytes - Attachment(content=...): the bytes are already in memory (and in the
                      baseline), so this is the library's own overhead;
* ours queued       - 10,000 Messages (2 KB body) built, then all submitted at once through
                      a pool of 5 connections;
* aiosmtplib        - reads the file, stdlib EmailMessage.add_attachment, send_message;
* nodemailer        - attachments: [{path}] (peak RSS of the node process, same baseline).

Loop stall: a task that sleeps 1 ms in a loop records its longest gap while one message
with the attachment is built and sent (target: <= 20 ms). Ours by path, by path with
DKIM, by bytes; aiosmtplib (stdlib EmailMessage, send_message); Nodemailer (a 1 ms
setInterval on its own event loop, the same measure). And a fresh process's first send of
a small message (ours, aiosmtplib), the client built before the clock: what a first send
imports or sets up inside the loop (issue 21, item 20).

Large bodies (issue 25 item 4), each path with a 50 MiB message of two shapes, mostly
text/HTML (a 25 MiB text part, 7bit, and a 25 MiB HTML part with accents,
quoted-printable; the strings are the caller's, in the baseline) and mostly attachment
(the file by path): SMTP into smtp-sink, SES raw (``Content.Raw``, base64 in JSON) and
Mailgun MIME (``messages.mime``) into a local HTTP sink in its own process that reads
each body in 1 MiB pieces (so only the client is measured; it refuses a chunked body).
Each case streamed (the library as it is) and whole (every body rendered whole, the
reference: what the same library did before), peak RSS above idle and the longest loop
stall while the message is built and sent, in the same process (_large_bodies.py).

    .venv/bin/python benchmarks/memory.py [--rounds 3] [--queued 10000] [--quick]
    .venv/bin/python benchmarks/memory.py --stall-only [--rounds 5]   # the stall table alone
    .venv/bin/python benchmarks/memory.py --large-only [--rounds 3]   # the large-body table
    .venv/bin/python benchmarks/memory.py --outbox-only [--rounds 3] [--before REF] \
        [--outbox-via smtp,ses,mailgun] [--outbox-shapes attach,text] [--steps]

Outbox rows over 1 MiB (issue 25 item 4): the same two 50 MiB shapes enqueued into a
fresh outbox (SQLite, and Postgres on a throwaway cluster, tests/pgcluster.py), then
drained into smtp-sink (or through SES raw or Mailgun MIME into the HTTP sink:
``--outbox-via``), each phase in its own process (peak RSS above that process's idle
peak, the longest loop stall). ``--before REF``: the same cases with that commit's src/
too, interleaved in the same rounds (the reference). After the medians, every round's
longest step CPU and stall; ``--steps`` also times every loop callback, and names the
longest one of a round whose longest step is over 6 ms (a long step whose longest
callback is short is CPU charged to the loop's thread between callbacks, not ours).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    HOST,
    ensure_nodemailer,
    free_port,
    machine,
    median_of,
    num,
    ours_available,
    postfix_sink,
    rounds_of,
    run_worker,
    spawn,
    stop,
    table,
    verdict,
    wait_port,
)

MIB = 1024 * 1024


def attachment(size_mib: int) -> Path:
    path = BENCH_DIR / f"attach-{size_mib}mib.bin"
    if not path.exists() or path.stat().st_size != size_mib * MIB:
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(MIB))
    return path


@contextlib.contextmanager
def http_sink() -> Iterator[int]:
    """The HTTP API stand-in of _large_bodies.py, in its own process."""
    port = free_port()
    script = Path(__file__).resolve().parent / "_large_bodies.py"
    proc = spawn([sys.executable, script, "sink", port])
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


def size_row(
    name: str,
    size: float | None,
    delta: float | None,
    x: float | None,
    stall: float | None,
    cpu: float | None,
    elapsed: float | None,
) -> list[str]:
    """One row of a large-message table (sizes in bytes and KiB, shown in MiB)."""
    return [name, num(None if size is None else size / MIB, ".1f"),
            num(None if delta is None else delta / 1024, ".1f"), num(x, ".2f"),
            num(stall, ".1f"), num(cpu, ".1f"), num(elapsed, ".2f")]  # fmt: skip


def print_sizes(
    rows: list[list[str]], last: str, label: str, worst_x: float, worst_ms: float
) -> None:
    """A large-message table and its two targets (issue 25: 0.5x the size, 20 ms)."""
    print(table(["case", "message MiB", "peak above idle, MiB", "x size", "longest stall, ms",
                 "longest step CPU, ms", last], rows))  # fmt: skip
    print(f"{label}: peak RSS above idle <= 0.5x the message: {verdict(worst_x <= 0.5)}")
    print(f"{label}: no loop stall over 20 ms: {verdict(worst_ms <= 20)}")


def run_large(rounds: int, path: Path, size_mib: int) -> dict[str, Any]:
    """The large-body table: SMTP, SES raw, Mailgun MIME; text/HTML and attachment;
    streamed and whole (the reference), interleaved round by round."""
    cases: dict[str, Any] = {}
    with postfix_sink() as smtp_port, http_sink() as http_port:
        for via in ("smtp", "ses", "mailgun"):
            port = smtp_port if via == "smtp" else http_port
            for shape in ("text", "attach"):
                for mode in ("streamed", "whole"):
                    args = ["large", via, shape, mode, HOST, port, path]
                    cases[f"{via} {shape} {mode}"] = lambda args=args: run_worker(args)
        idle = ["large", "smtp", "idle", "streamed", HOST, smtp_port, path]
        cases["idle ticker, nothing sent"] = lambda: run_worker(idle)
        results = rounds_of(cases, rounds)
    print()
    print(f"Large bodies: a {size_mib} MiB message per path (median of {rounds} rounds)")
    rows, summary, worst_x, worst_ms = [], {}, 0.0, 0.0
    for name, res in results.items():
        delta = median_of(res, "delta_kb")
        size = median_of(res, "size")
        stall = median_of(res, "stall_ms")
        cpu = median_of(res, "cpu_ms")
        elapsed = median_of(res, "elapsed")
        x = None if delta is None or not size else delta * 1024 / size
        if name.startswith("idle"):
            rows.append([name, "", "", "", num(stall, ".1f"), num(cpu, ".1f"), ""])
            summary["large idle"] = {"stall_ms": stall}
            continue
        summary[f"large {name}"] = {"x": x, "stall_ms": stall, "cpu_ms": cpu, "elapsed": elapsed}
        if name.endswith("streamed"):
            worst_x = max(worst_x, x if x is not None else 99.0)
            worst_ms = max(worst_ms, stall if stall is not None else 1e9)
        rows.append(size_row(name, size, delta, x, stall, cpu, elapsed))
    print_sizes(rows, "send, s", "target streamed", worst_x, worst_ms)
    return summary


def run_outbox(
    rounds: int,
    path: Path,
    size_mib: int,
    before: str | None,
    vias: tuple[str, ...] = ("smtp",),
    shapes: tuple[str, ...] = ("attach", "text"),
) -> dict[str, Any]:
    """Outbox rows of a large message: enqueue, then drain (through each of ``vias``),
    each in its own process."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _common import export_src
    from tests.pgcluster import PostgresCluster

    versions: dict[str, Path | None] = {"": None}
    if before:
        versions[f" (before, {before})"] = export_src(before)
    results: dict[str, list[dict[str, Any]]] = {}
    with (
        postfix_sink() as smtp_port,
        http_sink() as http_port,
        PostgresCluster() as pg,
        tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp,
    ):
        ports = {"smtp": smtp_port, "ses": http_port, "mailgun": http_port}
        cases = [(v, s, lv) for v in vias for s in shapes for lv in versions.items()]
        for r in range(rounds):
            for store in ("sqlite", "postgres"):
                for via, shape, (label, src) in cases:
                    if store == "sqlite":
                        url = f"sqlite:///{tmp}/outbox-{r}-{via}-{shape}-{bool(src)}.db"
                    else:
                        url = pg.dsn
                        _pg_empty(pg.dsn)
                    for phase in ("enqueue", "drain"):
                        # the drain through ``via``; the enqueue's provider is not used
                        how = via if phase == "drain" else "smtp"
                        args = ["outbox", phase, shape, url, how, HOST, ports[how], path]
                        res = run_worker(args, timeout=600, src=src)
                        step = phase if via == "smtp" else f"{phase} {via}"
                        results.setdefault(f"{store} {shape} {step}{label}", []).append(res)
                        if "error" in res:
                            print(f"  {store} {shape} {step}{label}: {res['error']}")
    print()
    print(f"Outbox rows of a {size_mib} MiB message, each phase in its own process "
          f"(median of {rounds} rounds)")  # fmt: skip
    rows, summary, worst_x, worst_ms = [], {}, 0.0, 0.0
    size_of = {
        s: median_of([r for k, v in results.items() if k.startswith(f"sqlite {s} enqueue")
                      for r in v], "size")
        for s in shapes
    }  # fmt: skip
    for name, res in results.items():
        delta, stall = median_of(res, "delta_kb"), median_of(res, "stall_ms")
        cpu, elapsed = median_of(res, "cpu_ms"), median_of(res, "elapsed")
        size = size_of[name.split()[1]]
        x = None if delta is None or not size else delta * 1024 / size
        summary[f"outbox {name}"] = {"x": x, "stall_ms": stall, "cpu_ms": cpu, "elapsed": elapsed}
        if "before" not in name:
            worst_x = max(worst_x, x if x is not None else 99.0)
            worst_ms = max(worst_ms, stall if stall is not None else 1e9)
        rows.append(size_row(name, size, delta, x, stall, cpu, elapsed))
    print_sizes(rows, "phase, s", "target", worst_x, worst_ms)
    print_rounds(results)
    return summary


def print_rounds(results: dict[str, list[dict[str, Any]]]) -> None:
    """Each case's longest step, round by round: a median hides the one round in ten
    whose step is long, which is what the 20 ms target is about. A round reads
    ``cpu/stall`` (ms); ``+gcN`` when a full collection ran on the loop, with the
    longest step's CPU without collections and the longest collection after it."""
    print("Longest step CPU / longest stall (ms), each round (+gc: full collections, then")
    print("the longest step's CPU without them / the longest collection):")
    for name, res in results.items():
        shown = ", ".join(_round(r) for r in res)
        worst = max((r["cpu_ms"] for r in res if "error" not in r), default=None)
        print(f"  {name}: {shown} (worst step CPU {num(worst, '.1f')})")


def _round(res: dict[str, Any]) -> str:
    if "error" in res:
        return "error"
    shown = f"{res['cpu_ms']:.1f}/{res['stall_ms']:.1f}"
    if res.get("gc_full"):
        shown += f" +gc{res['gc_full']} {res['cpu_nogc_ms']:.1f}/{res['gc_ms']:.1f}"
    if "callback_ms" in res and res["cpu_ms"] > 6:  # --steps: what the long step held
        shown += f" [{res['callback_ms']:.1f} {res['callback']}]"
    return shown


def _pg_empty(dsn: str) -> None:
    """The Postgres outbox emptied between cases (its tables may not exist yet)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('mailer_outbox')").fetchone()
        if exists is not None and exists[0] is not None:
            conn.execute("TRUNCATE mailer_outbox CASCADE")


def run(rounds: int, queued: int, size_mib: int, stall_only: bool = False) -> dict[str, Any]:
    print(f"memory: {machine()}")
    print(f"  {rounds} rounds; fresh process per case; attachment {size_mib} MiB random bytes;")
    print(f"  {queued} queued sends over 5 connections")
    unavailable = ours_available()
    if unavailable:
        print(f"  ours: {unavailable}")
    path = attachment(size_mib)
    ensure_nodemailer()
    with postfix_sink() as port:
        cases: dict[str, Any] = {}
        if stall_only:
            pass
        elif not unavailable:
            cases["ours attach-path"] = lambda: run_worker(["mem", "attach-path", HOST, port, path])
            cases["ours attach-path-dkim"] = lambda: run_worker(
                ["mem", "attach-path-dkim", HOST, port, path]
            )
            cases["ours attach-bytes"] = lambda: run_worker(
                ["mem", "attach-bytes", HOST, port, path]
            )
            cases["ours queued"] = lambda: run_worker(
                ["mem", "queued", HOST, port, queued], timeout=600
            )
        if not stall_only:
            cases["aiosmtplib attach"] = lambda: run_worker(
                ["mem", "aiosmtplib-attach", HOST, port, path]
            )
            cases["nodemailer attach"] = lambda: run_worker(["nodemailer", "mem", HOST, port, path])
        results = rounds_of(cases, rounds) if cases else {}
        stalls: dict[str, Any] = {}
        stalls["ours first send"] = lambda: run_worker(["stall", "first", HOST, port, path])
        stalls["aiosmtplib first send"] = lambda: run_worker(
            ["stall", "aiosmtplib-first", HOST, port, path]
        )
        if not unavailable:
            for case in ("path", "path-dkim", "bytes"):
                stalls[f"ours attach-{case}"] = lambda case=case: run_worker(
                    ["stall", case, HOST, port, path]
                )
        stalls["aiosmtplib attach"] = lambda: run_worker(["stall", "aiosmtplib", HOST, port, path])
        stalls["nodemailer attach"] = lambda: run_worker(["nodemailer", "stall", HOST, port, path])
        stall_results = rounds_of(stalls, rounds)
    size_kb = size_mib * 1024
    rows = []
    summary: dict[str, Any] = {}
    if results:
        print()
        print(f"Peak RSS above the idle process (median of {rounds} rounds)")
    for name, res in results.items():
        delta = median_of(res, "delta_kb")
        base = median_of(res, "base_kb")
        mult = None if delta is None else delta / size_kb
        summary[name] = {"delta_mib": None if delta is None else delta / 1024, "x": mult}
        if "queued" in name:
            per = None if delta is None else delta / queued
            note = f"{num(per, '.1f')} KiB per queued send"
        else:
            note = f"{num(mult, '.2f')}x the attachment"
        rows.append([name, num(None if base is None else base / 1024, ".1f"),
                     num(None if delta is None else delta / 1024, ".1f"), note])  # fmt: skip
    if results:
        print(table(["case", "idle MiB", "peak above idle, MiB", ""], rows))
        mult = summary.get("ours attach-path", {}).get("x")
        print(
            f"target {size_mib} MiB attachment by path: peak RSS above idle <= 0.5x its size: "
            f"{verdict(None if mult is None else mult <= 0.5)}"
        )
    print()
    print(f"Longest event-loop stall while sending it (median of {rounds} rounds)")
    rows = []
    for name, res in stall_results.items():
        ms = median_of(res, "stall_ms")
        elapsed = median_of(res, "elapsed")
        summary[f"stall {name}"] = {"stall_ms": ms, "elapsed": elapsed}
        rows.append([name, num(ms, ".1f"), num(elapsed, ".2f")])
    print(table(["case", "longest stall, ms", "send, s"], rows))
    worst = [median_of(stall_results[n], "stall_ms") for n in stall_results if n.startswith("ours")]
    ok = None if not worst or None in worst else max(w for w in worst if w is not None) <= 20
    print(f"target no loop stall over 20 ms (ours): {verdict(ok)}")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queued", type=int, default=10000)
    ap.add_argument("--size-mib", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="1 round, 1,000 queued sends")
    ap.add_argument("--stall-only", action="store_true", help="the loop-stall table alone")
    ap.add_argument("--large-only", action="store_true", help="the large-body table alone")
    ap.add_argument("--outbox-only", action="store_true", help="the outbox-row table alone")
    ap.add_argument("--before", help="outbox cases: also that commit's src/ (the reference)")
    ap.add_argument(
        "--steps",
        action="store_true",
        help="large and outbox cases: also time every loop callback (the longest one, and "
        "what it was, shown for a round whose longest step is over 6 ms)",
    )
    ap.add_argument(
        "--outbox-via",
        default="smtp",
        help="outbox cases: drain through these, comma-separated (smtp,ses,mailgun)",
    )
    ap.add_argument(
        "--outbox-shapes",
        default="attach,text",
        help="outbox cases: these message shapes, comma-separated (attach,text)",
    )
    args = ap.parse_args(argv)
    if args.steps:
        os.environ["MAILER_BENCH_STEPS"] = "1"  # the workers' environment (_large_bodies.py)
    if args.quick:
        args.rounds, args.queued = 1, 1000
    if args.large_only:
        print(f"memory: {machine()}")
        return run_large(args.rounds, attachment(args.size_mib), args.size_mib)
    if args.outbox_only:
        print(f"memory: {machine()}")
        return run_outbox(
            args.rounds,
            attachment(args.size_mib),
            args.size_mib,
            args.before,
            tuple(args.outbox_via.split(",")),
            tuple(args.outbox_shapes.split(",")),
        )
    summary = run(args.rounds, args.queued, args.size_mib, args.stall_only)
    if not args.stall_only:
        summary.update(run_large(args.rounds, attachment(args.size_mib), args.size_mib))
        path = attachment(args.size_mib)
        summary.update(run_outbox(args.rounds, path, args.size_mib, args.before,
                                  tuple(args.outbox_via.split(",")),
                                  tuple(args.outbox_shapes.split(","))))  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
