"""Benchmark clients, each run in a fresh process by the scripts; prints one JSON line.

    _clients.py ours HOST PORT CONNS COUNT BODY        this project: Mailer + SMTP provider
    _clients.py ours-prerendered ... / ours-provider   the same without building/rendering
                                                       in the timed part / without the Mailer
    _clients.py aiosmtplib HOST PORT CONNS COUNT BODY  aiosmtplib, CONNS reused connections,
                                                       an EmailMessage built per send
    _clients.py aiosmtplib-raw ...                     the same, one pre-rendered message
    _clients.py rtt HOST PORT N                        median NOOP round trip (seconds)
    _clients.py failover KIND PRIMARY BACKUP COUNT     KIND: refused | hung (paired with
                                                       a Mailer on the backup alone)
    _clients.py mem CASE HOST PORT [ARG]               peak RSS above the idle process
    _clients.py large PATH SHAPE MODE HOST PORT FILE   one large message (_large_bodies.py)
    _clients.py outbox PHASE SHAPE URL HOST PORT FILE  ... through an outbox (the same)

Only the sending is timed (not the process start, imports or connection warm-up).
Set BENCH_PROFILE=file.prof to cProfile the timed part of the "ours" case.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

SENDER = "App <app@example.com>"
RCPT = "user@example.org"


def body(size: int) -> str:
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    return (line * (size // len(line) + 1))[:size]


def vm(field: str) -> int:
    """A /proc/self/status figure in kB (VmHWM is the peak resident set size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def smtp_config(host: str, port: int, conns: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "ignore_tls": True,
        "pool": True,
        "max_connections": conns,
        "max_messages": 10**9,
        **extra,
    }


def make_mailer(host: str, port: int, conns: int, **extra: Any) -> Any:
    from mailer import Mailer

    config = smtp_config(host, port, conns, **extra)
    return Mailer.from_config(
        {
            "defaults": {"sender": SENDER},
            "providers": [{"type": "smtp", "name": "sink", "config": config}],
        }
    )


def dkim_options() -> dict[str, Any]:
    """A fresh 2048-bit RSA key (nothing verifies here: the cost of signing is the point)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return {"domain": "example.com", "selector": "bench", "private_key": pem}


class Ticker:
    """A task that wakes every millisecond; the longest gap is the worst loop stall."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def first_send_stall(case: str, host: str, port: int) -> dict[str, Any]:
    """Longest gap of a 1 ms ticker during a fresh process's first send of a small
    message (the client built before the clock: an app builds it at start-up). What the
    first send imports or sets up inside the loop shows here, and only here."""
    if case == "aiosmtplib-first":
        import aiosmtplib

        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
        with Ticker() as ticker:
            t0 = time.perf_counter()
            await client.connect()
            await client.sendmail(SENDER, [RCPT], raw_message(100))
            elapsed = time.perf_counter() - t0
        await client.quit()
        return {"stall_ms": ticker.longest * 1000, "elapsed": elapsed}
    from mailer import Message

    mailer = make_mailer(host, port, 1)
    message = Message(to=[RCPT], subject="first", text="the first send of this process")
    async with mailer:
        with Ticker() as ticker:
            await asyncio.sleep(0.01)  # the ticker's own first wake-up is not the send's
            t0 = time.perf_counter()
            await mailer.send(message)
            elapsed = time.perf_counter() - t0
    return {"stall_ms": ticker.longest * 1000, "elapsed": elapsed}


async def stall(case: str, host: str, port: int, arg: str) -> dict[str, Any]:
    """Longest gap of a 1 ms ticker on the loop while one message with the file goes."""
    if case.endswith("first"):
        return await first_send_stall(case, host, port)
    path = Path(arg)
    if case == "aiosmtplib":
        import aiosmtplib

        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
        await client.connect()
        await client.sendmail("app@example.com", [RCPT], raw_message(100))
        with Ticker() as ticker:
            t0 = time.perf_counter()
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = SENDER, RCPT, "Attachment"
            msg.set_content("see attached")
            msg.add_attachment(path.read_bytes(), maintype="application",
                               subtype="octet-stream", filename=path.name)  # fmt: skip
            await client.send_message(msg)
            elapsed = time.perf_counter() - t0
        await client.quit()
        return {"stall_ms": ticker.longest * 1000, "elapsed": elapsed}

    from mailer import Attachment, Message

    extra = {"dkim": dkim_options()} if case.endswith("-dkim") else {}
    mailer = make_mailer(host, port, 1, **extra)
    async with mailer:
        # warm-up with a small attachment: the one-time costs of a process's first one
        # (mimetypes reads its tables: 4-40 ms) are not a per-send stall
        small = Attachment(content=b"warm", filename="warm.txt")
        await mailer.send(Message(to=[RCPT], subject="warm", text="warm", attachments=[small]))
        data = path.read_bytes() if case.startswith("bytes") else None
        with Ticker() as ticker:
            t0 = time.perf_counter()
            att = (Attachment(path=path) if data is None else
                   Attachment(content=data, filename="attach.bin"))  # fmt: skip
            await mailer.send(
                Message(to=[RCPT], subject="Attachment", text="see attached", attachments=[att])
            )
            elapsed = time.perf_counter() - t0
    return {"stall_ms": ticker.longest * 1000, "elapsed": elapsed}


async def ours(
    host: str, port: int, conns: int, count: int, size: int, variant: str = "full"
) -> dict[str, Any]:
    """variant: "full" (build, render and send each message through the Mailer),
    "prerendered" (messages built and rendered before the clock starts; Mailer + provider),
    "provider" (prerendered, straight to SMTPProvider.send: no Mailer)."""
    from mailer import Message

    text = body(size)
    mailer = make_mailer(host, port, conns)
    provider = mailer.providers[0]
    errors = 0
    ready: list[Message] = []
    if variant != "full":
        sender = mailer.defaults["sender"]
        for i in range(count):
            msg = Message(sender=sender, to=[RCPT], subject=f"Benchmark message {i}", text=text)
            msg.as_bytes()
            ready.append(msg)

    async def one(i: int) -> None:
        nonlocal errors
        try:
            if variant == "full" or i < 1000:
                await mailer.send(Message(to=[RCPT], subject=f"Benchmark message {i}", text=text))
            elif variant == "prerendered":
                await mailer.send(ready[i - 1000])
            else:
                await provider.send(ready[i - 1000])
        except Exception as exc:
            errors += 1
            if errors == 1:
                print(f"first error: {exc!r}", file=sys.stderr)

    async with mailer:
        await asyncio.gather(*(one(i) for i in range(conns * 2)))
        msg_size = len(Message(sender=SENDER, to=[RCPT], subject="x", text=text).as_bytes())
        profile = os.environ.get("BENCH_PROFILE")
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        collector = GCTimer()
        t0, c0 = time.perf_counter(), time.process_time()
        with collector:
            await asyncio.gather(*(one(1000 + i) for i in range(count)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
    # cpu_us: this process's CPU time per message (user + system). On a shared machine
    # it moves far less than the rate does, so it is what a before/after should read.
    # gc_us: of that, the time the cyclic collector ran (gc.callbacks), per message; gc_full:
    # how many of its runs were full collections
    return {"elapsed": elapsed, "count": count, "errors": errors, "rate": count / elapsed,
            "msg_bytes": msg_size, "cpu_us": cpu / count * 1e6,
            "gc_us": collector.seconds / count * 1e6, "gc_full": collector.full}  # fmt: skip


class GCTimer:
    """Time spent in the cyclic garbage collector while the block runs (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.full += info["generation"] == 2

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def raw_message(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = "Benchmark message"
    msg["Message-ID"] = "<bench@example.com>"
    msg.set_content(body(size))
    return msg.as_bytes()


def build_message(i: int, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = f"Benchmark message {i}"
    msg["Message-ID"] = f"<bench-{i}@example.com>"
    msg.set_content(text)
    return msg


async def aiosmtplib_case(
    host: str, port: int, conns: int, count: int, size: int, raw_only: bool = False
) -> dict[str, Any]:
    """CONNS reused aiosmtplib connections.

    Default: like the others, a message is built per send (stdlib EmailMessage) and sent
    with send_message. raw_only: one pre-rendered message sent with sendmail (the
    transport alone, aiosmtplib's best case).
    """
    import aiosmtplib

    raw = raw_message(size)
    text = body(size)
    clients = [aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) for _ in range(conns)]
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(*(c.ehlo() for c in clients))
    errors = 0

    async def worker(client: Any, todo: list[int]) -> None:
        nonlocal errors
        while todo:
            i = todo.pop()
            try:
                if raw_only:
                    await client.sendmail("app@example.com", [RCPT], raw)
                else:
                    await client.send_message(build_message(i, text))
            except Exception:
                errors += 1

    await asyncio.gather(*(worker(c, list(range(2))) for c in clients))
    todo = list(range(count))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, todo) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        await c.quit()
    return {"elapsed": elapsed, "count": count, "errors": errors, "rate": count / elapsed,
            "msg_bytes": len(raw)}  # fmt: skip


async def rtt(host: str, port: int, n: int) -> dict[str, Any]:
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
    await client.connect()
    await client.ehlo()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.noop()
        samples.append(time.perf_counter() - t0)
    await client.quit()
    return {"rtt": statistics.median(samples)}


async def failover(kind: str, primary: int, backup: int, count: int) -> dict[str, Any]:
    """Paired in one process: a Mailer with only the backup, and one with the dead primary
    first. Sends alternate between them in blocks (which goes first alternates too), so
    both see the same machine noise; each is timed per block of sequential sends."""
    from mailer import Mailer, Message

    def build(with_primary: bool) -> Any:
        providers = []
        if with_primary:
            cfg = smtp_config("127.0.0.1", primary, 1, connection_timeout=0.5, greeting_timeout=0.5)
            providers.append({"type": "smtp", "name": "primary", "priority": 1, "config": cfg})
        providers.append(
            {"type": "smtp", "name": "backup", "priority": 2,
             "config": smtp_config("127.0.0.1", backup, 1)}
        )  # fmt: skip
        return Mailer.from_config(
            {
                "defaults": {"sender": SENDER},
                "providers": providers,
                "health": {"cooldown": 600, "max_cooldown": 600},
            }
        )

    text = body(2048)
    alone, failing = build(False), build(True)
    async with alone, failing:
        t0 = time.perf_counter()
        opened = 0
        while failing.health()["primary"]["state"] != "open":
            await failing.send(Message(to=[RCPT], subject="opening", text=text))
            opened += 1
            if opened > 20:
                raise RuntimeError("the primary's breaker never opened")
        time_to_open = time.perf_counter() - t0
        for i in range(5):
            await alone.send(Message(to=[RCPT], subject=f"warm {i}", text=text))
            await failing.send(Message(to=[RCPT], subject=f"warm {i}", text=text))
        block = 25
        times: dict[str, list[float]] = {"alone": [], "failover": []}
        for b in range(max(count // block, 1)):
            order = [("alone", alone), ("failover", failing)]
            if b % 2:
                order.reverse()
            for name, mailer in order:
                t0 = time.perf_counter()
                for i in range(block):
                    result = await mailer.send(
                        Message(to=[RCPT], subject=f"msg {b} {i}", text=text)
                    )
                    assert result.provider == "backup"
                times[name].append((time.perf_counter() - t0) / block)
    alone_us = statistics.median(times["alone"]) * 1e6
    failover_us = statistics.median(times["failover"]) * 1e6
    return {"alone_us": alone_us, "failover_us": failover_us,
            "overhead": failover_us / alone_us - 1, "sends_to_open": opened,
            "time_to_open": round(time_to_open, 3)}  # fmt: skip


async def mem(case: str, host: str, port: int, arg: str | None) -> dict[str, Any]:
    """Peak RSS of the work above the process's peak after imports and a warm-up send."""
    if case == "aiosmtplib-attach":
        import aiosmtplib

        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
        await client.connect()
        await client.sendmail("app@example.com", [RCPT], raw_message(100))
        base = vm("VmHWM")
        assert arg is not None
        path = Path(arg)
        msg = EmailMessage()
        msg["From"] = SENDER
        msg["To"] = RCPT
        msg["Subject"] = "Attachment"
        msg.set_content("see attached")
        msg.add_attachment(
            path.read_bytes(), maintype="application", subtype="octet-stream",
            filename=path.name,
        )  # fmt: skip
        await client.send_message(msg)
        await client.quit()
        peak = vm("VmHWM")
        return {"base_kb": base, "peak_kb": peak, "delta_kb": peak - base}

    from mailer import Attachment, Message

    conns = 5 if case == "queued" else 1
    extra = {"dkim": dkim_options()} if case.endswith("-dkim") else {}
    case = case.removesuffix("-dkim")
    mailer = make_mailer(host, port, conns, **extra)
    async with mailer:
        await mailer.send(Message(to=[RCPT], subject="warm", text="warm"))
        data = Path(arg).read_bytes() if case == "attach-bytes" and arg else None
        base = vm("VmHWM") if data is None else max(vm("VmHWM"), vm("VmRSS"))
        t0 = time.perf_counter()
        if case == "attach-path":
            assert arg is not None
            att = Attachment(path=Path(arg))
            await mailer.send(
                Message(to=[RCPT], subject="Attachment", text="see attached", attachments=[att])
            )
        elif case == "attach-bytes":
            assert data is not None
            att = Attachment(content=data, filename="attach.bin")
            del data
            await mailer.send(
                Message(to=[RCPT], subject="Attachment", text="see attached", attachments=[att])
            )
        elif case == "queued":
            n = int(arg or 10000)
            text = body(1800)
            msgs = [Message(to=[RCPT], subject=f"queued {i}", text=text) for i in range(n)]
            results = await asyncio.gather(*(mailer.send(m) for m in msgs), return_exceptions=True)
            failed = sum(isinstance(r, BaseException) for r in results)
            if failed:
                raise RuntimeError(f"{failed} of {n} queued sends failed")
        elif case != "idle":
            raise SystemExit(f"unknown memory case {case}")
        elapsed = time.perf_counter() - t0
        peak = vm("VmHWM")
    return {"base_kb": base, "peak_kb": peak, "delta_kb": peak - base, "elapsed": elapsed}


def main(argv: list[str]) -> dict[str, Any]:
    mode, *rest = argv
    if mode.startswith("ours") or mode.startswith("aiosmtplib"):
        host, port, conns, count, size = rest
        if mode.startswith("ours"):
            variant = mode.partition("-")[2] or "full"
            return asyncio.run(ours(host, int(port), int(conns), int(count), int(size), variant))
        raw_only = mode == "aiosmtplib-raw"
        return asyncio.run(
            aiosmtplib_case(host, int(port), int(conns), int(count), int(size), raw_only)
        )
    if mode == "rtt":
        host, port, n = rest
        return asyncio.run(rtt(host, int(port), int(n)))
    if mode == "failover":
        kind, primary, backup, count = rest
        return asyncio.run(failover(kind, int(primary), int(backup), int(count)))
    if mode == "mem":
        case, host, port, *arg = rest
        return asyncio.run(mem(case, host, int(port), arg[0] if arg else None))
    if mode == "stall":
        case, host, port, path = rest
        return asyncio.run(stall(case, host, int(port), path))
    if mode in ("large", "outbox"):  # one large message through a path, or an outbox
        from _large_bodies import main as large

        result = large(["case" if mode == "large" else "outbox", *rest])
        assert result is not None
        return result
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
