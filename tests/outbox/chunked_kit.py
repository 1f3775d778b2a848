"""The large message the chunked-row tests share (test_chunked, test_chunked_off_loop):
every kind of streamed piece an outbox row is stored and loaded in chunks for."""

from __future__ import annotations

import os
from pathlib import Path

from mailer import Attachment, Message
from mailer._message.stream import STREAM_THRESHOLD

MiB = 1024 * 1024


def large_message(tmp_path: Path, *, small_path: bool = True) -> tuple[Message, bytes, bytes]:
    """A message with a 3 MiB attachment by path, a 2 MiB one in memory, a small file
    (by path, or in memory: then the enqueue renders this very message, not a copy with
    the small file read), a 1.5 MiB text part with "." lines and a 1 MiB
    quoted-printable HTML part; the large attachments' bytes."""
    by_path, in_memory = os.urandom(3 * MiB + 7), os.urandom(2 * MiB)
    (tmp_path / "big.bin").write_bytes(by_path)
    (tmp_path / "small.txt").write_bytes(b"a small file\n")
    text = "".join(f".line {i}\n" for i in range(STREAM_THRESHOLD // 10 + 20_000))
    html = "<p>caf\u00e9 " * (STREAM_THRESHOLD // 8 + 100)
    message = Message(
        sender="app@example.com",
        to="u@example.org",
        bcc="hidden@example.org",
        subject="Large",
        text=text,
        html=html,
        attachments=[
            tmp_path / "big.bin",
            Attachment(content=in_memory, filename="mem.bin"),
            tmp_path / "small.txt"
            if small_path
            else Attachment(content=b"a small file\n", filename="small.txt"),
        ],
    )
    return message, by_path, in_memory
