"""Time to the commit point of a cold SMTP send at a given round-trip time.

What the default pre-commit budget must leave room for: a healthy provider across the
internet, on a cold connection (connect, greeting, EHLO, STARTTLS, TLS handshake, EHLO,
AUTH, MAIL/RCPT/DATA). The server is the test kit's aiosmtpd with STARTTLS and AUTH
(trustme certificates), behind ../shared/tools/latency-proxy; the client is our SMTP
provider without a pool, so every send is cold. Printed: the median and max time of a
whole cold send and of ``verify()`` (connect..AUTH, QUIT), per round-trip time, next to
the default budget.

    .venv/bin/python benchmarks/setup_time.py [--rtt-ms 0 100 200] [--sends 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from _common import latency_proxy, machine, table  # noqa: E402

from mailer import Message  # noqa: E402
from mailer._routing.budget import BudgetConfig  # noqa: E402
from mailer.providers._smtp import SMTPProvider  # noqa: E402
from mailer.testing import SMTPTestServer, make_certs  # noqa: E402


async def measure(port: int, config: dict[str, object], sends: int) -> tuple[list[float], ...]:
    provider = SMTPProvider.from_config("p", {**config, "port": port, "pool": False})
    whole, verify = [], []
    async with provider:
        for i in range(sends):
            started = time.monotonic()
            await provider.verify()
            verify.append(time.monotonic() - started)
            message = Message(sender="app@example.com", to=[f"u{i}@example.org"], text="x")
            started = time.monotonic()
            await provider.send(message)
            whole.append(time.monotonic() - started)
    return whole, verify


def main(rtts: list[float], sends: int) -> None:
    print(f"setup_time: {machine()}")
    budget = BudgetConfig().pre_commit
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp))
        server = SMTPTestServer(certs, tls="starttls", pipelining=True).start()
        try:
            config = server.config()
            config["auth"] = {"user": "alice", "password": "s3cret-pass"}
            for rtt in rtts:
                with latency_proxy(server.port, rtt / 2) as port:
                    whole, verify = asyncio.run(measure(port, config, sends))
                rows.append([f"{rtt:g}", f"{statistics.median(verify) * 1000:,.0f}",
                             f"{max(verify) * 1000:,.0f}",
                             f"{statistics.median(whole) * 1000:,.0f}",
                             f"{max(whole) * 1000:,.0f}", f"{budget * 1000:,.0f}"])  # fmt: skip
                print(" | ".join(rows[-1]), flush=True)
        finally:
            server.stop()
    print()
    print(table(["RTT ms", "verify p50 ms", "verify max ms", "cold send p50 ms",
                 "cold send max ms", "default budget ms"], rows))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0, 100, 200])
    parser.add_argument("--sends", type=int, default=5)
    args = parser.parse_args()
    main(args.rtt_ms, args.sends)
