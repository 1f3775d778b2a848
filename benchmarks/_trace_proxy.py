"""latency-proxy (../shared/tools/latency-proxy) with a trace of every chunk it forwards.

The same pump as the shared tool (each chunk read from one side is written to the other
``delay-ms`` later, in order), plus, per chunk: its direction, when it was read and when
it was written (``time.monotonic_ns``, the clock the client's trace uses too), its length
and whether it holds a 354 or an end of data. The trace is written as JSON lines to
``--trace`` when the proxy is stopped (SIGTERM). Used by ``rtt_trace.py`` only.

    _trace_proxy.py --listen 127.0.0.1:2600 --target 127.0.0.1:2525 --delay-ms 5 --trace F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

TRACE: list[dict[str, Any]] = []


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, way: str
) -> None:
    queue: asyncio.Queue[tuple[float, int, bytes]] = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, time.monotonic_ns(), data))
        queue.put_nowait((time.monotonic() + delay, time.monotonic_ns(), b""))

    async def write() -> None:
        while True:
            due, read_ns, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            TRACE.append(
                {
                    "way": way,
                    "read": read_ns,
                    "write": time.monotonic_ns(),
                    "len": len(data),
                    "r354": data.count(b"354 "),
                    "end": data.count(b"\r\n.\r\n"),
                }
            )
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--listen", default="127.0.0.1:2600")
    ap.add_argument("--target", required=True)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--trace", type=Path, required=True)
    args = ap.parse_args()
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.target.rsplit(":", 1)
    delay = args.delay_ms / 1000.0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(thost, int(tport))
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):  # asyncio sets it; the trace says so
            sock = w.get_extra_info("socket")
            TRACE.append({"way": "nodelay", "on": sock.getsockopt(socket.IPPROTO_TCP,
                                                                  socket.TCP_NODELAY)})  # fmt: skip
        await asyncio.gather(
            pump(client_r, server_w, delay, "c2s"), pump(server_r, client_w, delay, "s2c")
        )

    server = await asyncio.start_server(handle, lhost, int(lport))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    args.trace.write_text("".join(json.dumps(t) + "\n" for t in TRACE))


if __name__ == "__main__":
    asyncio.run(main())
