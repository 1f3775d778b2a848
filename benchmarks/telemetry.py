"""What the delivery log listener and OpenTelemetry cost per send.

One process, four Mailers on an in-memory provider (so the Mailer's own work is all there
is to measure): without any listener, with the default structured-log listener (logging
not configured, so its records are filtered out by level), instrumented with the
OpenTelemetry API and no SDK (no-op), and instrumented with the SDK (in-memory metric
reader, every span sampled and exported to memory). Blocks of sends alternate between
the four so that each sees the same noise; per round, the median time per send of each;
reported: the median over rounds and the ratio to "no listener" per round.

    .venv/bin/python benchmarks/telemetry.py [--rounds 7] [--count 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table

from mailer import Mailer, Message
from mailer.otel import Telemetry
from mailer.testing import MemoryProvider

CASES = ["no listener", "log listener (default)", "otel API, no SDK", "otel SDK, all sampled"]


def build(case: str) -> Mailer:
    mailer = Mailer([MemoryProvider("memory")])
    if case == "no listener":
        mailer._runtime.listeners.clear()  # what the Mailer cost before the log listener
    elif case == "otel API, no SDK":
        Telemetry().instrument(mailer)
    elif case == "otel SDK, all sampled":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
        Telemetry(meter_provider=meters, tracer_provider=tracers).instrument(mailer)
    return mailer


async def block(mailer: Mailer, count: int) -> float:
    """Microseconds per send, each message built (not rendered) before the clock."""
    messages = [
        Message(sender="app@example.com", to="user@example.org", subject="s", text="x")
        for _ in range(count)
    ]
    started = time.perf_counter()
    for message in messages:
        await mailer.send(message)
    took = (time.perf_counter() - started) / count * 1e6
    return took


async def measure(rounds: int, count: int) -> None:
    mailers = {case: build(case) for case in CASES}
    for mailer in mailers.values():
        await block(mailer, 200)  # warm-up
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(rounds):
        for case, mailer in mailers.items():
            samples[case].append(await block(mailer, count))
    base = samples["no listener"]
    rows = []
    for case in CASES:
        ratios = [s / b for s, b in zip(samples[case], base, strict=True)]
        rows.append(
            [case, f"{statistics.median(samples[case]):.1f}", f"{statistics.median(ratios):.2f}x"]
        )
    print(machine())
    print(f"{rounds} rounds of {count} sequential sends per case, memory provider\n")
    print(table(["case", "us/send (median)", "vs no listener (median of rounds)"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 200")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.count = 3, 200
    asyncio.run(measure(args.rounds, args.count))


if __name__ == "__main__":
    main()
