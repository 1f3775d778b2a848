"""The Message's own work on every send, in a tight loop, against another commit.

Microseconds of CPU (``time.process_time``) per call, best (and median) of ROUNDS runs
of COUNT, the trees interleaved run by run in their own processes:

* **construct**: ``Message(sender=..., to=[...], subject=..., text=...)``, validated;
* **defaults**: ``with_defaults`` that fills the sender (a copy sharing the id cell),
  as the Mailer does when the caller leaves ``sender`` out;
* **defaults, none**: ``with_defaults`` with nothing to fill (no copy);
* **render**: a new message's first ``as_bytes()`` (the Date, the Message-ID made on
  first read, the fast renderer, the wire check).

A refactor of ``mailer._message.model`` must leave these as they were; they are a few
microseconds of the ~250 a message costs in all, so a tight loop is how they compare.

    .venv/bin/python benchmarks/message_cost.py [--ref main] [--rounds 5] [--count 20000]
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

KEYS = ("construct", "defaults", "defaults, none", "render")

_CHILD = """
import json, sys, time
from mailer import Message
from mailer._message import MessageDefaults

COUNT = int(sys.argv[1])
fill = MessageDefaults({"sender": "app@example.com"})
none = MessageDefaults({"tags": ["t"]})

def per_call(make):
    began = time.process_time()
    for _ in range(COUNT):
        make()
    return (time.process_time() - began) / COUNT * 1e6

def construct():
    return Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")

bare = Message(to=["b@example.org"], subject="s", text="t")
tagged = Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t", tags=["x"])
messages = [construct() for _ in range(COUNT)]
it = iter(messages)

figures = {
    "construct": per_call(construct),
    "defaults": per_call(lambda: bare.with_defaults(fill)),
    "defaults, none": per_call(lambda: tagged.with_defaults(none)),
    "render": per_call(lambda: next(it).as_bytes()),
}
print(json.dumps(figures))
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
    print(f"us a call, best (median) of {args.rounds} runs of {args.count}; before = {args.ref}")
    for key in KEYS:
        line = []
        for side in ("before", "after"):
            values = [r[key] for r in runs[side]]
            line.append(f"{side} {min(values):.2f} ({statistics.median(values):.2f})")
        print(f"  {key:15} " + "  ".join(line))


if __name__ == "__main__":
    main()
