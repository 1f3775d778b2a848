"""Webhook ingest over HTTP: signed SendGrid posts of 1,000 events through the ASGI
receiver under uvicorn on 127.0.0.1, each answered 200 once stored.

Per store (a SQLite file; a Postgres database of a throwaway cluster, tests/pgcluster.py)
it prints, in the same run: **HTTP**, the whole path (the POST over loopback, the
ECDSA P-256 signature check, the parse into DeliveryEvents, ``ingest_events``, the
answer), and **reference**, the same posts parsed by benchmarks/events.py's stand-in and
given to ``ingest_events`` directly, without HTTP or signature. Target (issue 22): at
least 2,000 events/s on each, over HTTP.

    .venv/bin/python benchmarks/webhooks.py [--posts 20] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.events import parse_sendgrid, sendgrid_post

from mailer import Mailer
from mailer.providers._sendgrid import SendGridProvider
from mailer.testing import free_port
from mailer.webhooks import asgi_app

KEY = ec.generate_private_key(ec.SECP256R1())
DER = KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUBLIC = base64.b64encode(DER).decode()  # as SendGrid's settings page shows it


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json"}  # fmt: skip


def provider() -> SendGridProvider:
    config = {"api_key": "SG.x", "webhook": {"public_key": PUBLIC}}
    return SendGridProvider.from_config("sendgrid", config)


async def over_http(url: str, bodies: list[bytes]) -> tuple[float, list[float]]:
    port = free_port()
    async with Mailer([provider()], suppression=url) as mailer:
        server = uvicorn.Server(uvicorn.Config(asgi_app(mailer), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))  # fmt: skip
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                warm = sendgrid_post(999, 10, random.Random(1))
                assert (await c.post("/sendgrid", content=warm, headers=signed(warm))).is_success
                per_post = []
                t0 = time.perf_counter()
                for body in bodies:  # one after another, as an ESP's queue posts
                    t = time.perf_counter()
                    response = await c.post("/sendgrid", content=body, headers=signed(body))
                    per_post.append(time.perf_counter() - t)
                    assert response.json()["stored"] == 1000, response.text
                total = time.perf_counter() - t0
        finally:
            server.should_exit = True
            await task
    return total, per_post


async def direct(url: str, bodies: list[bytes]) -> float:
    async with Mailer([provider()], suppression=url) as mailer:
        await mailer.ingest_events(parse_sendgrid(sendgrid_post(999, 10, random.Random(1))))
        t0 = time.perf_counter()
        for body in bodies:
            assert (await mailer.ingest_events(parse_sendgrid(body))).new == 1000
        return time.perf_counter() - t0


async def bench(name: str, urls: tuple[str, str], posts: int) -> None:
    bodies = [sendgrid_post(b, 1000, random.Random(22 + b)) for b in range(posts)]
    total, per_post = await over_http(urls[0], bodies)
    reference = await direct(urls[1], bodies)
    events = posts * 1000
    print(f"{name}: HTTP {events / total:,.0f} events/s (p50 "
          f"{statistics.median(per_post) * 1000:.0f} ms, max {max(per_post) * 1000:.0f} ms a "
          f"post of 1,000) | reference, ingest_events directly: {events / reference:,.0f} "
          f"events/s")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        await bench("SQLite", (f"sqlite:///{d}/http.db", f"sqlite:///{d}/direct.db"), args.posts)
    if not args.no_postgres:
        from tests.pgcluster import PostgresCluster

        with PostgresCluster() as one, PostgresCluster() as two:
            await bench("Postgres", (one.dsn, two.dsn), args.posts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
