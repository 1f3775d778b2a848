"""The per-send bookkeeping around a provider, in a tight loop, against another commit.

Two figures per tree, microseconds of CPU (``time.process_time``) per send, best of
ROUNDS runs of COUNT, the trees interleaved run by run in their own processes:

* **attempt**: an attempt as ``Leaf._attempt`` runs it (``AttemptContext.open`` with a
  budget, its scope entered, ``enter``, ``commit``, ``disarm``, ``exit``): the anyio
  scope, the budget's timer and the deadline's backstop;
* **render checks**: what ``Provider.send`` does twice a send (group, leaf) on a message
  the Mailer already rendered;
* **send**: a whole ``Mailer.send`` to a memory provider (defaults, suppression check,
  rendering, routing, the attempt, its record and events), with the default logging: the
  per-send work around a provider's I/O;
* **send, concurrent**: the same, 50 sends at a time (``asyncio.gather``) to a memory
  provider that waits a microsecond's timer: each send suspends and is resumed through
  every frame of its chain (the Mailer's, routing's, the attempt's), as every send to a
  real server is;
* **hand-off wait**: a pipelined send's wait for the transaction before it on the
  connection (``_after``: its future set by another task), as the SMTP exchange makes it
  for every handed-off send.

These costs are a few microseconds of ~300 a message, under the noise of the throughput
clients' rounds on a shared machine; a tight loop is how they can be compared at all.

    .venv/bin/python benchmarks/attempt_cost.py [--ref main] [--rounds 5] [--count 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tight import compare

_CHILD = """
import asyncio, json, sys, time
from mailer import Message, _clock
from mailer._attempt import AttemptContext

COUNT = int(sys.argv[1])

async def main() -> dict[str, float]:
    message = Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")
    message.render()
    check = getattr(sys.modules["mailer._message.model"], "is_rendered", None)
    began = time.process_time()
    for _ in range(COUNT):
        now = _clock.now()
        state = AttemptContext.open("p", deadline=now + 30, started=now, grace=0.5, budget=3.0)
        assert state.scope is not None
        with state.scope:
            token = state.enter()
            await state.commit()
        state.disarm()
        state.exit(token)
    attempt = (time.process_time() - began) / COUNT * 1e6
    began = time.process_time()
    for _ in range(COUNT):  # as Provider.send does it in that tree, twice a send
        for _ in range(2):
            if check is None or not check(message):
                await message.render_async()
    render = (time.process_time() - began) / COUNT * 1e6

    from mailer import Mailer
    from mailer.providers._memory import MemoryConfig, MemoryProvider

    provider = MemoryProvider(config=MemoryConfig(keep=1))
    mailer = Mailer([provider], defaults={"sender": "a@example.com"})
    async with mailer:
        for _ in range(COUNT // 10):  # warm: first-use caches, the loop-lag monitor
            await mailer.send(Message(to=["b@example.org"], subject="s", text="t"))
        began = time.process_time()
        for _ in range(COUNT):
            await mailer.send(Message(to=["b@example.org"], subject="s", text="t"))
        send = (time.process_time() - began) / COUNT * 1e6

    slow = MemoryProvider(config=MemoryConfig(keep=1, latency=1e-6))
    mailer = Mailer([slow], defaults={"sender": "a@example.com"})
    async with mailer:
        async def batch() -> None:
            await asyncio.gather(
                *(mailer.send(Message(to=["b@example.org"], subject="s", text="t"))
                  for _ in range(50))
            )
        for _ in range(COUNT // 500):
            await batch()
        began = time.process_time()
        for _ in range(COUNT // 50):
            await batch()
        concurrent = (time.process_time() - began) / (COUNT // 50 * 50) * 1e6

    try:
        from mailer.providers._smtp._exchange import _after as after
    except ImportError:  # a tree before connection.py's split: a method of Connection
        from mailer.providers._smtp.connection import Connection
        after = Connection._after
    loop = asyncio.get_running_loop()
    began = time.process_time()
    for _ in range(COUNT):
        previous = loop.create_future()
        loop.call_soon(previous.set_result, None)
        await after(None, previous)
    handoff = (time.process_time() - began) / COUNT * 1e6
    return {"attempt": attempt, "render": render, "send": send, "concurrent": concurrent,
            "handoff": handoff}

print(json.dumps(asyncio.run(main())))
"""


def main() -> None:
    keys = ("attempt", "render", "send", "concurrent", "handoff")
    compare(__doc__.split("\n")[0], _CHILD, keys, "a send")


if __name__ == "__main__":
    main()
