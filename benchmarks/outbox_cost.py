"""The outbox's own work per drained message, without the network, against another commit.

Microseconds of CPU (``time.process_time``: every thread, the SQLite writer's included)
per message, best (and median) of ROUNDS runs of COUNT messages, the trees interleaved
run by run in their own processes:

* **drain**: ``Outbox.drain`` of COUNT stored 2 KB messages (the benchmark's, as
  ``benchmarks/outbox.py`` enqueues them) into a memory provider that takes each at
  once, concurrency 60 (``auto`` on 5 pooled connections), SQLite at its defaults:
  the claims, the stored message's load, the task per send, the commit-point check
  and the result's write, with the Mailer's send to a memory provider (about 90 us,
  ``benchmarks/attempt_cost.py``) in the middle;
* **drain, loop thread**: the same drain's CPU on the event loop's thread alone (the
  rest is the SQLite writer's);
* **load**: a claimed row's message made ready to send (``_chunked.loaded``: the JSON
  loaded back, the stored rendering attached).

``benchmarks/outbox.py`` measures the drain into a real SMTP sink beside direct sending;
its ratios move by 0.1-0.2x between runs on a shared machine, so the outbox's own cuts
(tens of microseconds of ~400) are compared here.

    .venv/bin/python benchmarks/outbox_cost.py [--ref main] [--rounds 5] [--count 2000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tight import compare

KEYS = ("drain", "drain, loop thread", "load")

_CHILD = """
import asyncio, json, os, sys, tempfile, time
from pathlib import Path
from mailer import Mailer, Message
from mailer.providers._memory import MemoryConfig, MemoryProvider
from mailer._outbox import _chunked

COUNT = int(sys.argv[1])

def loop_thread():
    stat = Path(f"/proc/self/task/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

def messages(n):
    return [Message(sender="bench@example.com", to=[f"u{i}@example.org"], subject=f"m {i}",
                    text="x" * 2048) for i in range(n)]

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        provider = MemoryProvider(config=MemoryConfig(keep=1))
        mailer = Mailer([provider], outbox={"url": f"sqlite:///{tmp}/o.db", "poll_interval": 0.05})
        async with mailer:
            for m in messages(COUNT // 10):  # warm: first-use caches
                await mailer.enqueue(m)
            await mailer.outbox.drain(concurrency=60)
            for m in messages(COUNT):
                await mailer.enqueue(m)
            cpu, main_cpu = time.process_time(), loop_thread()
            done = await mailer.outbox.drain(concurrency=60)
            cpu, main_cpu = time.process_time() - cpu, loop_thread() - main_cpu
            assert done == {"sent": COUNT}, done
            for m in messages(COUNT):
                await mailer.enqueue(m)
            store = mailer.outbox.store
            items = await store.claim("bench", COUNT, lease=600, max_age=1e9)
            assert len(items) == COUNT
            began = time.process_time()
            for item in items:
                async with _chunked.loaded(item, store.read_chunk):
                    pass
            load = time.process_time() - began
    return {"drain": cpu / COUNT * 1e6, "drain, loop thread": main_cpu / COUNT * 1e6,
            "load": load / COUNT * 1e6}

print(json.dumps(asyncio.run(main())))
"""


def main() -> None:
    compare(__doc__.split("\n")[0], _CHILD, KEYS, "a message", count=2000)


if __name__ == "__main__":
    main()
