"""Where a message's round trip goes over a 10 ms round trip: timestamps, not guesses.

One connection, ``--count`` messages given all at once (as ``latency.py`` does), through a
traced copy of latency-proxy (``_trace_proxy.py``) into smtp-sink. The client records
``time.monotonic_ns()`` at each read of replies (``data_received``) and each write to the
socket, and at the steps in between (the finished send settled, the next send resumed
behind the verdict, its payload, the group after it); the proxy records each chunk it
forwards. Both use CLOCK_MONOTONIC, so one time line. Printed per message (medians and
p90 over the run, in microseconds):

* the cycle: one end of data written to the next;
* 354 read -> payload written: our own critical path (and each step in it);
* each leg of the round trip: client -> proxy, the proxy's delay beyond ``--delay-ms``
  both ways, the server's turnaround, proxy -> client.

``--before REV`` traces that commit too, interleaved round by round.

    .venv/bin/python benchmarks/rtt_trace.py [--count 200] [--rounds 1] [--before main]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    export_src,
    free_port,
    machine,
    postfix_sink,
    run_worker,
    spawn,
    stop,
    wait_port,
    worker_env,
)

BODY = 2048
TRACE_PROXY = Path(__file__).resolve().parent / "_trace_proxy.py"
EVENTS: list[tuple[str, int, int]] = []


def _mark(kind: str, value: int = 0) -> None:
    EVENTS.append((kind, time.monotonic_ns(), value))


def _instrument() -> None:
    """Wrap the SMTP layer's steps with timestamps (this process only)."""
    from mailer.providers._smtp import _exchange, connection, pipeline

    stream_cls = pipeline.ReplyStream
    received = stream_cls.data_received
    init = stream_cls.__init__
    send = stream_cls.send
    send_payload = stream_cls.send_payload
    after = _exchange._after
    transaction = connection.Connection.transaction
    flush = getattr(stream_cls, "_flush", None)
    from mailer.providers import _slots
    from mailer.providers._smtp import pool

    acquire = _slots.Slots.acquire
    use = pool.Pool._use

    async def acquire_(self: Any) -> None:
        await acquire(self)
        _mark("acquired")

    async def use_(self: Any, *args: Any) -> Any:
        _mark("use")
        return await use(self, *args)

    _slots.Slots.acquire = acquire_  # type: ignore[method-assign]
    pool.Pool._use = use_  # type: ignore[method-assign]

    def data_received(self: Any, data: bytes) -> None:
        _mark("rx", data.count(b"354 "))
        received(self, data)

    def init_(self: Any, transport: Any) -> None:
        init(self, transport)
        sock = transport.get_extra_info("socket")
        _mark("nodelay", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        write = transport.write

        def traced(data: Any) -> None:
            write(data)
            _mark("tx", bytes(data).count(b"\r\n.\r\n"))

        transport.write = traced

    def send_(self: Any, data: bytes, **kw: Any) -> None:
        if data.startswith((b"MAIL", b"RSET")):
            _mark("group")
        send(self, data, **kw)

    async def send_payload_(self: Any, *args: Any, **kw: Any) -> None:
        _mark("payload")
        await send_payload(self, *args, **kw)

    async def after_(*args: Any) -> None:
        await after(*args)
        _mark("resume")

    async def transaction_(self: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await transaction(self, *args, **kw)
        finally:
            _mark("settled")

    if flush is not None:

        def flush_(self: Any) -> None:
            if self._held:
                _mark("flush")
            flush(self)

        stream_cls._flush = flush_  # type: ignore[method-assign]
    stream_cls.data_received = data_received  # type: ignore[method-assign]
    stream_cls.__init__ = init_  # type: ignore[method-assign]
    stream_cls.send = send_  # type: ignore[method-assign]
    stream_cls.send_payload = send_payload_  # type: ignore[method-assign]
    _exchange._after = after_
    connection.Connection.transaction = transaction_  # type: ignore[method-assign]


def client(host: str, port: int, count: int, out: Path) -> None:
    """The traced run, in its own process (``ours`` from the tree PYTHONPATH says)."""
    _instrument()
    from _clients import ours

    EVENTS.clear()
    t0 = time.monotonic_ns()
    result = asyncio.run(ours(host, port, 1, count, BODY))
    events = [e for e in EVENTS if e[1] >= t0]
    out.write_text(json.dumps({"result": result, "events": events}))


def _after_first(times: list[int], t: int) -> int | None:
    """The first of the sorted ``times`` at or after ``t``."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return times[lo] if lo < len(times) else None


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"{statistics.median(values):8.0f} {p90:8.0f} {len(values):5d}"


def analyse(
    client_trace: dict[str, Any], proxy: list[dict[str, Any]], delay_ms: float, rtt: float | None
) -> None:
    ev = client_trace["events"]
    by: dict[str, list[int]] = {}
    for kind, t, value in ev:
        if kind == "rx" and value:
            by.setdefault("rx354", []).append(t)
        elif kind == "tx" and value:
            by.setdefault("txend", []).append(t)
        else:
            by.setdefault(kind, []).append(t)
    rx354, txend = by.get("rx354", []), by.get("txend", [])
    # the timed part: skip the warm-up's first two messages
    rx354, txend = rx354[2:], txend[2:]
    rows: dict[str, list[float]] = {}
    us = 1e-3
    for a, b in itertools.pairwise(txend):
        rows.setdefault("cycle: end of data -> next end of data", []).append((b - a) * us)
    for t in rx354:
        end = _after_first(txend, t)
        if end is None:
            continue
        rows.setdefault("354 read -> payload written", []).append((end - t) * us)
        for step in ("settled", "resume", "payload", "acquired", "use", "group", "flush"):
            at = _after_first(by.get(step, []), t)
            if at is not None and at <= end:
                rows.setdefault(f"  354 read -> first '{step}'", []).append((at - t) * us)
    c2s = [p for p in proxy if p.get("way") == "c2s" and p["end"]]
    s2c = [p for p in proxy if p.get("way") == "s2c" and p["r354"]]
    delay_us = delay_ms * 1000
    s2c_reads = sorted(p["read"] for p in s2c)
    for p in c2s:
        client_tx = min(txend, key=lambda t: abs(p["read"] - t), default=None)
        if client_tx is not None:  # (our mark follows the write: the proxy may read first)
            rows.setdefault("client write -> proxy read (c2s)", []).append(
                (p["read"] - client_tx) * us
            )
        rows.setdefault("proxy delay beyond --delay-ms (c2s)", []).append(
            (p["write"] - p["read"]) * us - delay_us
        )
        back = _after_first(s2c_reads, p["write"])
        if back is not None:
            rows.setdefault("server turnaround (proxy write -> 354 read)", []).append(
                (back - p["write"]) * us
            )
    all_rx354 = by.get("rx354", [])
    for p in s2c:
        rows.setdefault("proxy delay beyond --delay-ms (s2c)", []).append(
            (p["write"] - p["read"]) * us - delay_us
        )
        got = _after_first(all_rx354, p["write"])
        if got is not None:
            rows.setdefault("proxy write -> client read (s2c)", []).append((got - p["write"]) * us)
    chunks = {way: sum(1 for p in proxy if p.get("way") == way) for way in ("c2s", "s2c")}
    nodelay = [p["on"] for p in proxy if p.get("way") == "nodelay"]
    ours = [value for kind, _, value in ev if kind == "nodelay"]
    writes = sum(1 for kind, _, _ in ev if kind == "tx")
    result = client_trace["result"]
    print(
        f"  {result['count']} msgs, {result['rate']:.1f} msg/s, cpu {result['cpu_us']:.0f} us/msg"
    )
    print(f"  client writes {writes}, proxy chunks {chunks}")
    print(f"  TCP_NODELAY: ours {ours}, the proxy's {nodelay}")
    cycles = rows.get("cycle: end of data -> next end of data")
    if rtt and cycles:
        trips = statistics.median(cycles) / (rtt * 1e6)
        print(f"  NOOP round trip {rtt * 1000:.2f} ms; median cycle = {trips:.3f} round trips")
    print(f"  {'us (median, p90, n)':52s} {'median':>8s} {'p90':>8s} {'n':>5s}")
    for name, values in rows.items():
        print(f"  {name:52s} {_stats(values)}")


def one_run(sink: int, count: int, delay_ms: float, src: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "proxy.jsonl"
        out = Path(tmp) / "client.json"
        port = free_port()
        pin = os.environ.get("RTT_TRACE_PIN")  # "client,proxy" CPUs, for a diagnosis
        pins = [["taskset", "-c", c] for c in pin.split(",")] if pin else [[], []]
        proxy = spawn(
            [*pins[1], sys.executable, TRACE_PROXY, "--listen", f"{HOST}:{port}",
             "--target", f"{HOST}:{sink}", "--delay-ms", str(delay_ms), "--trace", trace]
        )  # fmt: skip
        try:
            wait_port(port, proxy)
            rtt = run_worker(["rtt", HOST, port, 20]).get("rtt")
            cmd = [
                *pins[0],
                sys.executable,
                __file__,
                "--client",
                HOST,
                str(port),
                str(count),
                str(out),
            ]
            subprocess.run(cmd, env=worker_env(src), check=True, timeout=600,
                           cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        finally:
            stop(proxy)
        lines = trace.read_text().splitlines() if trace.exists() else []
        analyse(json.loads(out.read_text()), [json.loads(x) for x in lines], delay_ms, rtt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--before", help="also trace this git revision, interleaved")
    ap.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        host, port, count, out = args.client
        client(host, int(port), int(count), Path(out))
        return
    print(f"rtt_trace: {machine()}; load {os.getloadavg()[0]:.2f}")
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.before:
        trees.append((f"before ({args.before})", export_src(args.before)))
    with postfix_sink() as sink:
        for r in range(args.rounds):
            for name, src in trees:
                print(f"round {r + 1}/{args.rounds}, {name}:")
                one_run(sink, args.count, args.delay_ms, src)


if __name__ == "__main__":
    main()
