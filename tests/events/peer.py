"""A second process for test_processes: sends to one address every 20 ms until its
suppression check refuses it, and prints when (time.time()). Bounded: 10 s."""

from __future__ import annotations

import asyncio
import sys
import time

from mailer import Mailer, Message, RecipientsSuppressed
from mailer.testing import MemoryProvider


async def main(url: str, address: str) -> None:
    async with Mailer([MemoryProvider("peer")], suppression=url) as mailer:
        msg = Message(sender="app@example.com", to=[address], subject="s", text="t")
        await mailer.send(msg)  # the local copy is loaded: not suppressed yet
        print("ready", flush=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                await mailer.send(msg)
            except RecipientsSuppressed:
                print(f"suppressed {time.time():.6f}", flush=True)
                return
            await asyncio.sleep(0.02)
        print("never", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
