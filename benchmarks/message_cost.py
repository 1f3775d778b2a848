"""The Message's own work on every send, in a tight loop, against another commit.

Microseconds of CPU (``time.process_time``) per call, best (and median) of ROUNDS runs
of COUNT, the trees interleaved run by run in their own processes:

* **construct**: ``Message(sender=..., to=[...], subject=..., text=...)``, validated;
* **defaults**: ``with_defaults`` that fills the sender (a copy sharing the id cell),
  as the Mailer does when the caller leaves ``sender`` out;
* **defaults, none**: ``with_defaults`` with nothing to fill (no copy);
* **render**: a new message's first ``as_bytes()`` (the Date, the Message-ID made on
  first read, the fast renderer, the wire check);
* **payload**: SMTP's DATA payload of a rendered message (``message_payload``: the
  dot-stuffing check, the weak reference that keeps it once per message);
* **send path**: all the Message's work of one send as the benchmark's
  (``_clients.py ours``) makes it: ``Message(...)`` of 2 KB of text without a sender,
  ``with_defaults``, the rendering, the envelope, ``smtputf8``, the payload.

A refactor of ``mailer._message.model`` must leave these as they were; they are a few
microseconds of the ~250 a message costs in all, so a tight loop is how they compare.

    .venv/bin/python benchmarks/message_cost.py [--ref main] [--rounds 5] [--count 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tight import compare

KEYS = ("construct", "defaults", "defaults, none", "render", "payload", "send path")

_CHILD = """
import json, sys, time
from mailer import Message
from mailer._message import MessageDefaults
from mailer.providers._smtp.wire import message_payload

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

line = "The quick brown fox jumps over the lazy dog, again and again and again.\\n"
text = (line * 30)[:2048]  # _clients.body(2048)
rendered = [
    Message(sender="a@example.com", to=["b@example.org"], subject="s", text=text)
    for _ in range(COUNT)
]
for m in rendered:
    m.as_bytes()
done = iter(rendered)

def send_path():
    msg = Message(to=["b@example.org"], subject="Benchmark message", text=text)
    msg = msg.with_defaults(fill)
    msg.as_bytes()
    msg.envelope_sender, msg.envelope_recipients, msg.smtputf8, msg.message_id
    return message_payload(msg)

figures = {
    "construct": per_call(construct),
    "defaults": per_call(lambda: bare.with_defaults(fill)),
    "defaults, none": per_call(lambda: tagged.with_defaults(none)),
    "render": per_call(lambda: next(it).as_bytes()),
    "payload": per_call(lambda: message_payload(next(done))),
    "send path": per_call(send_path),
}
print(json.dumps(figures))
"""


def main() -> None:
    compare(__doc__.split("\n")[0], _CHILD, KEYS, "a call")


if __name__ == "__main__":
    main()
