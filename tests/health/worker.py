"""One worker process of the multi-process tests (and benchmarks/health.py).

``python tests/health/worker.py SPEC.json``: builds a Mailer from ``spec["config"]``,
waits for the go file, sends ``sends`` messages (or until the stop file appears), and
writes what it saw to ``spec["out"]``: each send's provider, wall-clock end time,
duration and attempts; the WARNINGs about the store; the background probes it ran; and
its final view of each provider's health.

While it runs, each of the ``mailer`` logger's lines is also appended to
``spec["out"] + ".log"`` (one JSON ``[time, level, text]`` a line), so a test can wait
for what a process has seen (the store unreachable, a breaker opened) instead of
sleeping for as long as that usually takes.

``spec["phases"]``, a list of partial specs (each with its own ``go`` and ``out``), runs
them one after the other in the same process, each with a Mailer of its own: a test
with two phases pays for one interpreter start, not two.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


class _Records(logging.Handler):
    """Keeps the lines for the result, and appends each to the live log as it comes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, int, str]] = []
        self.live: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        line = (time.time(), record.levelno, record.getMessage())
        self.lines.append(line)
        if self.live is not None:
            with self.live.open("a") as live:
                live.write(json.dumps(line) + "\n")


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from mailer import Mailer, Message

    skew = float(spec.get("skew", 0.0))
    options: dict[str, Any] = {}
    if skew:
        real_time, real_mono = time.time, time.monotonic
        time.time = lambda: real_time() + skew  # type: ignore[assignment]
        options["clock"] = lambda: real_mono() + skew
    wall = time.time if not skew else real_time
    go, stop = Path(spec["go"]), Path(spec.get("stop", spec["go"] + ".stop"))
    mailer = Mailer.from_config(spec["config"], **options)
    sends: list[dict[str, Any]] = []
    async with mailer:
        deadline = real_deadline = time.monotonic() + 60
        shared = mailer._runtime.shared
        while shared is not None and not shared.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        Path(spec["out"] + ".ready").write_text("ready")
        while not go.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        interval = float(spec.get("interval", 0.0))
        limit = int(spec.get("sends", 0)) or 10**9
        real_deadline = time.monotonic() + float(spec.get("max_seconds", 60))
        n = 0
        while n < limit and not stop.exists() and time.monotonic() < real_deadline:
            n += 1
            message = Message(sender="app@example.com", to=["u@example.org"],
                              subject=f"{os.getpid()} #{n}", text="hi")  # fmt: skip
            started = time.monotonic()
            entry: dict[str, Any] = {}
            try:
                result = await mailer.send(message)
                entry["provider"] = result.provider
                attempts = result.attempts
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                attempts = getattr(exc, "attempts", []) or []
            entry["took"] = time.monotonic() - started
            entry["at"] = wall()
            entry["attempts"] = [[a.provider, a.outcome, a.error] for a in attempts]
            sends.append(entry)
            if interval:
                await asyncio.sleep(interval)
        health = mailer.health()
    return {"pid": os.getpid(), "sends": sends, "health": health}


async def _watched(coro: Any, after: float) -> dict[str, Any]:
    """Run ``coro``; if it is still running after ``after`` seconds, print every task's
    stack to stderr (a hang says where, before faulthandler ends the process)."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)
        sys.stderr.flush()

    handle = loop.call_later(after, dump)
    try:
        return await coro  # type: ignore[no-any-return]
    finally:
        handle.cancel()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    records = _Records()
    logger = logging.getLogger("mailer")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    for phase in spec.pop("phases", None) or [{}]:
        part = {**spec, **phase}
        # a worker that hangs says where, on stderr, and ends (the test reports it)
        faulthandler.dump_traceback_later(float(part.get("max_seconds", 60)) + 75, exit=True)
        records.lines, records.live = [], Path(part["out"] + ".log")
        out = asyncio.run(_watched(run(part), float(part.get("max_seconds", 60)) + 60))
        out["log"] = records.lines
        written = Path(part["out"] + ".part")
        written.write_text(json.dumps(out))
        written.replace(part["out"])  # whole, for a test that reads it while we go on


if __name__ == "__main__":
    main()
