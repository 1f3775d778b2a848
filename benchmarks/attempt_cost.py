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
* **hand-off wait**: a pipelined send's wait for the transaction before it on the
  connection (``_after``: its future set by another task), as the SMTP exchange makes it
  for every handed-off send.

These costs are a few microseconds of ~300 a message, under the noise of the throughput
clients' rounds on a shared machine; a tight loop is how they can be compared at all.

    .venv/bin/python benchmarks/attempt_cost.py [--ref main] [--rounds 5] [--count 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import export_src, worker_env

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
    return {"attempt": attempt, "render": render, "send": send, "handoff": handoff}

print(json.dumps(asyncio.run(main())))
"""


def _run(src: Path | None, count: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(count)],
        env=worker_env(src),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="main", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    before_src = export_src(args.ref)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        runs["before"].append(_run(before_src, args.count))
        runs["after"].append(_run(None, args.count))
    print(f"us a send, best (median) of {args.rounds} runs of {args.count}; before = {args.ref}")
    for key in ("attempt", "render", "send", "handoff"):
        line = []
        for side in ("before", "after"):
            values = [r[key] for r in runs[side]]
            line.append(f"{side} {min(values):.2f} ({statistics.median(values):.2f})")
        print(f"  {key:8} " + "  ".join(line))


if __name__ == "__main__":
    main()
