"""Enqueues a large message and kills itself with SIGKILL after its second chunk was
written, inside the row's transaction (for test_chunked.py).

``python crash_enqueue.py OUTBOX_URL FILE``
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio

from mailer import Mailer, Message
from mailer._message.stream import Source
from mailer._outbox import _chunked

_chunks = _chunked._attachment_chunks


def chunks_then_die(source: Source) -> Iterator[bytes]:
    for n, chunk in enumerate(_chunks(source)):
        if n == 2:  # two chunks are written: die before the third (and the COMMIT)
            os.kill(os.getpid(), signal.SIGKILL)
        yield chunk


async def main(url: str, file: str) -> None:
    _chunked._attachment_chunks = chunks_then_die
    async with Mailer.from_config({"providers": ["memory://"], "outbox": url}) as mailer:
        message = Message(sender="a@example.com", to="u@example.org", attachments=[Path(file)])
        await mailer.enqueue(message)
    raise SystemExit("the enqueue finished: it should have been killed")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
