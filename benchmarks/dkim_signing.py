"""DKIM signing: time per message and the longest event-loop stall while it runs.

A 1 ms ticker runs on the event loop while one message (a 2 KB text, or an attachment of
1 or 10 MiB of random bytes, rendered beforehand) is signed with rsa-sha256, either on
the loop (``_dkim.signature``) or as providers do it (``await _dkim.sign``: a worker
thread). The stall is the longest gap between ticks; the ratio compares the two in the
same run. Each case runs ``--rounds`` times, interleaved; medians are printed.

    .venv/bin/python benchmarks/dkim_signing.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OURS_FROM, OURS_SRC

if OURS_SRC is not None:
    sys.path.insert(0, str(OURS_SRC))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer import Attachment, Message
from mailer._message import dkim as _dkim


def _key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _message(size: int, options: dict[str, str]) -> Message:
    attachments = [Attachment(content=os.urandom(size), filename="big.bin")] if size else []
    m = Message(sender="a@example.com", to=["b@example.org"], text="x" * 2048,
                attachments=attachments, dkim=options)  # fmt: skip
    m.as_bytes()  # rendering is not what is measured here
    return m


async def _one(message: Message, off_loop: bool) -> tuple[float, float]:
    stop = asyncio.Event()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    assert message.dkim is not None
    started = time.perf_counter()
    if off_loop:
        await _dkim.sign(message, message.dkim)
    else:
        _dkim.signature(message, message.dkim)
    took = time.perf_counter() - started
    await asyncio.sleep(0.01)
    stop.set()
    await task
    return took, max(gaps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    sizes = [0, 1 << 20] if args.quick else [0, 1 << 20, 10 << 20]
    options = {"domain": "example.com", "selector": "s", "private_key": _key()}
    print(f"ours: {OURS_FROM}; rsa-sha256, relaxed/relaxed; {rounds} rounds")
    results: dict[tuple[int, bool], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for size in sizes:
            for off_loop in (False, True):
                message = _message(size, options)  # a fresh message: nothing cached
                took = asyncio.run(_one(message, off_loop))
                results.setdefault((size, off_loop), []).append(took)
    print("| message | signing on the loop | longest stall | signing in a worker thread "
          "| longest stall | stall ratio (thread/loop) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for size in sizes:
        on = results[(size, False)]
        off = results[(size, True)]
        on_t, on_s = (statistics.median(x[i] for x in on) * 1000 for i in (0, 1))
        off_t, off_s = (statistics.median(x[i] for x in off) * 1000 for i in (0, 1))
        label = f"{size >> 20} MiB attachment" if size else "2 KB text"
        print(f"| {label} | {on_t:.1f} ms | {on_s:.1f} ms | {off_t:.1f} ms | {off_s:.1f} ms "
              f"| {off_s / on_s:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
