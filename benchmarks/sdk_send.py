"""Azure Communication Services Email and Scaleway TEM: our adapters vs the official SDKs.

The same local fake as batch.py (benchmarks/_fake_esp.py, its own process) behind
latency-proxy --delay-ms 5 (a 10 ms round trip). Neither API has a batch endpoint for
different messages, so for each ESP, in one run, with default settings:

* ``send_batch``: ``provider.send_batch(messages)``: each message on its own request,
  ``max_connections`` (10) at a time;
* ``loop of send``: ``for m in messages: await provider.send(m)``;
* the official SDK's per-message call, in a loop: azure-communication-email's
  ``EmailClient.begin_send(..., polling=False)`` (HMAC-signed like ours) and scaleway's
  ``TemV1Alpha1API.create_email`` (both synchronous, on requests).

The sequential cases run ``--loop-count`` messages. Messages/s are compared in the same run.

    .venv/bin/python benchmarks/sdk_send.py [--count 2000] [--loop-count 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, free_port, latency_proxy, machine, ratio, spawn, stop, table, wait_port

from mailer import Message, SendResult
from mailer.providers._azure import AzureProvider
from mailer.providers._scaleway import ScalewayProvider
from mailer.providers.http import HTTPProvider

FAKE = Path(__file__).resolve().parent / "_fake_esp.py"
AZURE_KEY = base64.b64encode(b"bench-azure-access-key-32-bytes!").decode()
SCW_SECRET = "11111111-2222-4333-8444-555555555555"
PROJECT = "6a7a4d0e-3c6a-4d39-8d57-2f0c4a7b9e11"


def messages(n: int) -> list[Message]:
    return [Message(sender="shop@example.com", to=[f"user{i}@example.org"],
                    subject=f"Order {i}", text="Thanks for your order.\n" * 20,
                    html="<p>Thanks for your order.</p>" * 20) for i in range(n)]  # fmt: skip


def provider(kind: str, base_url: str) -> HTTPProvider:
    if kind == "azure":
        return AzureProvider.from_config("azure", {"endpoint": base_url,
                                                   "access_key": AZURE_KEY})  # fmt: skip
    return ScalewayProvider.from_config("scaleway", {"secret_key": SCW_SECRET,
                                                     "project_id": PROJECT,
                                                     "base_url": base_url})  # fmt: skip


async def _batch(kind: str, base_url: str, n: int) -> float:
    p = provider(kind, base_url)
    msgs = messages(n)
    await p.send(msgs[0])  # warm the connection
    start = time.perf_counter()
    outcomes = await p.send_batch(msgs)
    took = time.perf_counter() - start
    await p.aclose()
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes[:3]
    return n / took


async def _loop(kind: str, base_url: str, n: int) -> float:
    p = provider(kind, base_url)
    msgs = messages(n)
    await p.send(msgs[0])
    start = time.perf_counter()
    for m in msgs:
        await p.send(m)
    took = time.perf_counter() - start
    await p.aclose()
    return n / took


def _sdk(kind: str, base_url: str, n: int) -> float:
    msgs = messages(n)
    if kind == "azure":
        from azure.communication.email import EmailClient
        from azure.core.credentials import AzureKeyCredential

        client = EmailClient(base_url, AzureKeyCredential(AZURE_KEY))

        def send(m: Message) -> None:
            client.begin_send({
                "senderAddress": m.sender.email if m.sender else "",
                "recipients": {"to": [{"address": m.to[0].email}]},
                "content": {"subject": m.subject, "plainText": m.text, "html": m.html},
            }, polling=False).result()  # fmt: skip
    else:
        from scaleway import Client
        from scaleway.tem.v1alpha1 import CreateEmailRequestAddress, TemV1Alpha1API

        api = TemV1Alpha1API(Client(access_key="SCWABCDEFGHIJKLMNOPQ", secret_key=SCW_SECRET,
                                    default_project_id=PROJECT, default_region="fr-par",
                                    api_url=base_url))  # fmt: skip

        def send(m: Message) -> None:
            api.create_email(from_=CreateEmailRequestAddress(email="shop@example.com"),
                             to=[CreateEmailRequestAddress(email=m.to[0].email)],
                             subject=m.subject, text=m.text or "", html=m.html or "",
                             project_id=PROJECT)  # fmt: skip

    send(msgs[0])
    start = time.perf_counter()
    for m in msgs:
        send(m)
    return n / (time.perf_counter() - start)


def run(count: int, loop_count: int, rounds: int, delay_ms: float) -> None:
    print(f"sdk_send: {machine()}")
    print(f"  latency-proxy {delay_ms:g} ms each way; send_batch {count} messages, "
          f"sequential cases {loop_count}; {rounds} rounds, medians")  # fmt: skip
    port = free_port()
    fake = spawn([sys.executable, FAKE, "--port", str(port)])
    rows = []
    try:
        wait_port(port, fake)
        with latency_proxy(port, delay_ms) as proxied:
            base_url = f"http://{HOST}:{proxied}"
            for kind in ("azure", "scaleway"):
                cases: dict[str, Callable[[], float]] = {
                    "send_batch (10 at a time)": lambda k=kind: asyncio.run(
                        _batch(k, base_url, count)),
                    "loop of send": lambda k=kind: asyncio.run(_loop(k, base_url, loop_count)),
                    "official SDK loop": lambda k=kind: _sdk(k, base_url, loop_count),
                }  # fmt: skip
                rates: dict[str, list[float]] = {name: [] for name in cases}
                for r in range(rounds):
                    for name, fn in cases.items():
                        rates[name].append(fn())
                        print(f"  {kind} round {r + 1} {name}: {rates[name][-1]:,.0f} msg/s",
                              flush=True)  # fmt: skip
                med = {k: statistics.median(v) for k, v in rates.items()}
                for name in cases:
                    rows.append([kind, name, f"{med[name]:,.0f}",
                                 ratio(med[name], med["official SDK loop"])])  # fmt: skip
    finally:
        stop(fake)
    print()
    print(table(["ESP", "case", "msg/s", "vs SDK loop"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--loop-count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    run(args.count, args.loop_count, args.rounds, args.delay_ms)


if __name__ == "__main__":
    main()
