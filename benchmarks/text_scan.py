"""A large text part's scan and encoding, in a tight loop, against another commit.

A text or HTML part of 1 MiB or more is encoded slice by slice as it is sent
(``mailer._message.stream.TextSource``); when its rendering is made, one pass over the
slices finds the transfer encoding, the size and the "." lines. The 7bit check of that
pass (every slice, for a text that stays 7bit) is what this measures, on a 50 MiB text,
milliseconds of CPU (``time.process_time``), best (and median) of ROUNDS runs in fresh
processes, the trees interleaved:

* **scan 7bit**: ``TextSource(text)`` of 50 MiB of 72-character ASCII lines: the check
  runs on every 64 KiB slice (the common case: a large plain-text report);
* **scan qp**: the same text with one accented word per line: 8bit from the first
  slice, so the check stops at once and this is the rest of the pass (the control);
* **encode 7bit**: the 7bit text's bytes as sent (``TextSource.chunks()``), the pass
  a send makes, after the scan.

    .venv/bin/python benchmarks/text_scan.py [--ref main] [--rounds 5] [--count 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tight import compare

KEYS = ("scan 7bit", "scan qp", "encode 7bit")

_CHILD = """
import json, sys, time
from mailer._message.stream import TextSource

COUNT = int(sys.argv[1])
MIB = 50
line = "The quick brown fox jumps over the lazy dog, and again, and again, 0123.\\n"
plain = line * (MIB * 1024 * 1024 // len(line))
accented = plain.replace("fox", "f\\u00f6x")

def per_call(make):
    began = time.process_time()
    for _ in range(COUNT):
        make()
    return (time.process_time() - began) / COUNT * 1e3

def encode():
    for _ in TextSource(plain, scan=True).chunks():
        pass

source = TextSource(plain)
assert source.cte == "7bit" and TextSource(accented).cte == "quoted-printable"
figures = {
    "scan 7bit": per_call(lambda: TextSource(plain)),
    "scan qp": per_call(lambda: TextSource(accented)),
}
scan = figures["scan 7bit"]
figures["encode 7bit"] = per_call(encode) - scan
print(json.dumps(figures))
"""


def main() -> None:
    compare(__doc__ or "", _CHILD, KEYS, "per 50 MiB text", unit="ms", count=3)


if __name__ == "__main__":
    main()
