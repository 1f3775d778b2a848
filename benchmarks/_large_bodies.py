"""One large message through one path, in a fresh process (benchmarks/memory.py runs it).

    _large_bodies.py sink PORT                      an HTTP API stand-in that reads each
                                                    body in 1 MiB pieces and discards it
    _large_bodies.py case PATH SHAPE MODE HOST PORT FILE
        PATH   smtp (Postfix smtp-sink) | ses (Content.Raw) | mailgun (messages.mime)
        SHAPE  text   - a 25 MiB text part (7bit) and a 25 MiB HTML part with accents
                        (quoted-printable), built before the baseline (the caller's data)
               attach - Attachment(path=FILE), a short text part
               idle   - nothing is sent: the ticker alone for 2 s, the machine's own
                        noise (a loaded machine delays an idle loop too)
        MODE   streamed (the library as it is) | whole (STREAM_THRESHOLD set past the
               message: every body rendered whole, as before issue 25 item 4)

    _large_bodies.py outbox PHASE SHAPE URL VIA HOST PORT FILE
        PHASE  enqueue (a fresh outbox at URL gets the message) | drain (a second
               process delivers what the outbox holds through VIA, smtp, ses or
               mailgun, into smtp-sink or the HTTP sink at HOST:PORT)
        SHAPE  text | attach, as above; URL sqlite:///... or postgresql://...

Prints one JSON line: the peak RSS above the process's peak after imports, a warm-up
send and the caller's data (VmHWM, kB), the longest gap of a 1 ms ticker on the loop
while the message is built and sent, the longest CPU time the loop's thread spent
between two ticks (the longest step itself, without the waits for a CPU that a loaded
machine adds to the gap), the elapsed time and the message's size.

The HTTP sink runs in its own process, so the client's RSS is the client's alone; it
answers 200 with both ``MessageId`` (SES) and ``id`` (Mailgun), a new one each time,
and refuses a chunked body (411), as some APIs do: the client must send its length.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import RCPT, SENDER, Ticker, vm

MIB = 1024 * 1024


class CPUTicker(Ticker):
    """The 1 ms ticker, also keeping the longest CPU time the loop's thread spent between
    two of its wake-ups: the longest step of the library's own, apart from the time the
    process waited for a CPU (on a loaded machine, most of a long stall).

    And the garbage collector's share (``gc.callbacks``): the longest collection the
    loop's thread ran while the ticker ran, how many were full (generation 2), and the
    longest step's CPU without the collections in it. A full collection's cost grows with
    every object the process holds (the imports alone: ~15-40 ms here), whatever the step
    it falls in, so it is told apart from the step's own work."""

    def __init__(self) -> None:
        super().__init__()
        self.longest_cpu = 0.0
        self.longest_cpu_nogc = 0.0
        self.longest_gc = 0.0
        self.full_gcs = 0
        self._gc_in_gap = 0.0
        self._gc_start = 0.0
        self._thread = threading.get_ident()
        self._steps: _Callbacks | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._gc_start = time.thread_time()
            return
        spent = time.thread_time() - self._gc_start
        self._gc_in_gap += spent
        self.longest_gc = max(self.longest_gc, spent)
        self.full_gcs += info["generation"] == 2

    def __enter__(self) -> CPUTicker:
        gc.callbacks.append(self._on_gc)
        if os.environ.get("MAILER_BENCH_STEPS"):
            self._steps = _Callbacks()
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        gc.callbacks.remove(self._on_gc)
        if self._steps is not None:
            self._steps.close()

    def figures(self) -> dict[str, Any]:
        """The loop figures of a result line, in ms (and the count of full collections)."""
        figures: dict[str, Any] = {
            "stall_ms": self.longest * 1000, "cpu_ms": self.longest_cpu * 1000,
            "cpu_nogc_ms": self.longest_cpu_nogc * 1000, "gc_ms": self.longest_gc * 1000,
            "gc_full": self.full_gcs}  # fmt: skip
        if self._steps is not None:
            figures.update(callback_ms=self._steps.longest * 1000, callback=self._steps.name)
        return figures

    async def _run(self) -> None:
        last, cpu_last = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now, cpu = time.perf_counter(), time.thread_time()
            self.longest = max(self.longest, now - last)
            self.longest_cpu = max(self.longest_cpu, cpu - cpu_last)
            self.longest_cpu_nogc = max(self.longest_cpu_nogc, cpu - cpu_last - self._gc_in_gap)
            last, cpu_last, self._gc_in_gap = now, cpu, 0.0


class _Callbacks:
    """``MAILER_BENCH_STEPS=1`` (``memory.py --steps``): the longest single callback the
    loop ran (thread CPU) and what it was, by timing ``asyncio.Handle._run`` while the
    ticker runs. A long "step" of the ticker whose longest callback is short was not a
    step of ours: CPU charged to the loop's thread between callbacks (on this kernel,
    interrupt work; see docs/benchmarks.md). Costs ~2 us a callback, so off by default."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.name = ""
        self._run = run = asyncio.events.Handle._run

        def timed(handle: asyncio.Handle) -> None:
            start = time.thread_time()
            try:
                run(handle)
            finally:
                spent = time.thread_time() - start
                if spent > self.longest:
                    self.longest, self.name = spent, _callback_name(handle)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def close(self) -> None:
        asyncio.events.Handle._run = self._run  # type: ignore[method-assign]


def _callback_name(handle: asyncio.Handle) -> str:
    """A task's coroutine, or the callback's own name (never its arguments' repr: a
    future holding a 1 MiB chunk would take milliseconds to print)."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"task {task.get_coro().__qualname__}"
    return str(getattr(callback, "__qualname__", type(callback).__name__))


_ANSWERED = [0]


def _answer() -> bytes:
    """A fresh id per request, as an ESP gives: the sends recorded for delivery events
    are keyed by it (two sends with one id in a Postgres batch are refused)."""
    _ANSWERED[0] += 1
    n = _ANSWERED[0]
    return json.dumps({"MessageId": f"bench-{n}", "id": f"<bench-{n}@mg>"}).encode()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                writer.write(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            left = int(headers["content-length"])
            while left:
                left -= len(await reader.readexactly(min(left, MIB)))
            answer = _answer()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def sink(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _provider(path: str, host: str, port: int) -> dict[str, Any]:
    """The provider entry for ``path`` (smtp, ses, mailgun) at HOST:PORT."""
    url = f"http://{host}:{port}"
    if path == "smtp":
        config: dict[str, Any] = {"host": host, "port": port, "ignore_tls": True}
    elif path == "ses":
        config = {"region": "eu-west-1", "access_key_id": "AKIDBENCH",
                  "secret_access_key": "bench-secret", "base_url": url}  # fmt: skip
    else:
        config = {"api_key": "key-bench", "domain": "mg.example.com", "base_url": url}
    return {"type": path, "name": path, "config": config}


def _mailer(path: str, host: str, port: int, **more: Any) -> Any:
    from mailer import Mailer

    provider = _provider(path, host, port)
    mailer = Mailer.from_config({"defaults": {"sender": SENDER}, "providers": [provider], **more})
    for provider in mailer.providers:
        provider.max_message_bytes = 0  # the APIs' caps (SES 40 MB, Mailgun 25 MB) lifted
    return mailer


def _texts() -> tuple[str, str]:
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    html = "<p>Voilà l'été : naïve café, déjà vu, a paragraph of French words.</p>\n"
    return line * (25 * MIB // len(line)), html * (25 * MIB // len(html))


async def case(path: str, shape: str, mode: str, host: str, port: int, file: str) -> dict[str, Any]:
    from mailer import Attachment, Message
    from mailer._message import mime

    if mode == "whole":
        mime.STREAM_THRESHOLD = 1 << 62
    mailer = _mailer(path, host, port)
    async with mailer:
        warm = Attachment(content=b"warm", filename="warm.txt")
        await mailer.send(Message(to=[RCPT], subject="warm", text="warm", attachments=[warm]))
        text, html = _texts() if shape == "text" else ("see attached", None)
        base = max(vm("VmHWM"), vm("VmRSS"))
        if shape == "idle":
            with CPUTicker() as ticker:
                await asyncio.sleep(2.0)
            return {"base_kb": base, "peak_kb": vm("VmHWM"), "delta_kb": vm("VmHWM") - base,
                    "elapsed": 2.0, **ticker.figures(), "size": 0}  # fmt: skip
        with CPUTicker() as ticker:
            await asyncio.sleep(0.01)  # the ticker's own first wake-up is not the send's
            t0 = time.perf_counter()
            attachments = [Attachment(path=Path(file))] if shape == "attach" else []
            message = Message(
                sender=SENDER,
                to=[RCPT],
                subject="Large",
                text=text,
                html=html,
                attachments=attachments,
            )
            await mailer.send(message)
            elapsed = time.perf_counter() - t0
        peak = vm("VmHWM")
        size = message.rendered_size
    return {"base_kb": base, "peak_kb": peak, "delta_kb": peak - base, "elapsed": elapsed,
            **ticker.figures(), "size": size}  # fmt: skip


def _large_message(shape: str, file: str) -> Any:
    from mailer import Attachment, Message

    text, html = _texts() if shape == "text" else ("see attached", None)
    attachments = [Attachment(path=Path(file))] if shape == "attach" else []
    return Message(
        sender=SENDER, to=[RCPT], subject="Large", text=text, html=html, attachments=attachments
    )


async def outbox(
    phase: str, shape: str, url: str, via: str, host: str, port: int, file: str
) -> dict[str, Any]:
    """One phase of a large message's trip through an outbox, in this process alone:
    the enqueue (the message built before the baseline: the caller's data) or the drain
    (the row written by another process) through ``via`` (smtp, ses, mailgun) at
    HOST:PORT."""
    from mailer import Attachment, Message

    mailer = _mailer(via, host, port, outbox={"url": url})
    async with mailer:
        warm = Attachment(content=b"warm", filename="warm.txt")
        await mailer.send(Message(to=[RCPT], subject="warm", text="warm", attachments=[warm]))
        await mailer.outbox.stats()  # the store opened (its schema made) before the baseline
        message = _large_message(shape, file) if phase == "enqueue" else None
        base = max(vm("VmHWM"), vm("VmRSS"))
        with CPUTicker() as ticker:
            await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            if message is not None:
                await mailer.enqueue(message)
                done = {"queued": 1}
            else:
                done = await mailer.drain(timeout=120)
            elapsed = time.perf_counter() - t0
        peak = vm("VmHWM")
        size = message.rendered_size if message is not None else None
    if done != ({"queued": 1} if phase == "enqueue" else {"sent": 1}):
        raise RuntimeError(f"{phase}: {done}")
    return {"base_kb": base, "peak_kb": peak, "delta_kb": peak - base, "elapsed": elapsed,
            **ticker.figures(), "size": size}  # fmt: skip


def main(argv: list[str]) -> dict[str, Any] | None:
    if argv[0] == "sink":
        asyncio.run(sink(int(argv[1])))
        return None
    if argv[0] == "outbox":
        _, phase, shape, url, via, host, port, file = argv
        return asyncio.run(outbox(phase, shape, url, via, host, int(port), file))
    _, path, shape, mode, host, port, file = argv
    return asyncio.run(case(path, shape, mode, host, int(port), file))


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if result is not None:
        print(json.dumps(result), flush=True)
