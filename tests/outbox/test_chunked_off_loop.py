"""A chunked row's spool files are made, written and removed off the event loop (issue 25
item 4, "no event-loop stall over 20 ms"): one 1 MiB write into the page cache took up to
17 ms of kernel time on the loop on a machine whose disk was busy, and removing a 50 MiB
file 3-6 ms (docs/benchmarks.md, "The 50 MiB attachment drain's longest step").

No timing here: a profile hook on the loop's own thread (``sys.setprofile`` is per
thread) records every call of the file-system work while a real drain sends a large
message into a real SMTP server on 127.0.0.1, on SQLite and Postgres. The same hook sees
the senders read the spooled files on the loop (what it is allowed to do, and proof that
the hook watches the right thread), and the message arrives whole, so the writes did
happen, elsewhere.
"""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import anyio
import pytest

from mailer import Mailer, MessageError
from mailer._message.spooled import SpooledText
from mailer._message.stream import Source
from mailer._outbox import _chunked
from mailer._outbox.store import Stored
from mailer.testing import SMTPTestServer

from .chunked_kit import large_message
from .conftest import fast_outbox, smtp_entry

#: Python functions that do the spool's file-system work (none may run on the loop)
_SPOOL_WORK: dict[CodeType, str] = {
    SpooledText.__init__.__code__: "SpooledText() (creates a temporary file)",
    SpooledText.append.__code__: "SpooledText.append (writes a chunk)",
    SpooledText.close.__code__: "SpooledText.close (frees the file's pages)",
    shutil.rmtree.__code__: "shutil.rmtree",
    tempfile.mkdtemp.__code__: "tempfile.mkdtemp",
}
#: C functions that write or remove files (``BufferedWriter.write``: the attachment's copy)
_C_WORK = frozenset({"BufferedWriter.write", "pwrite", "unlink", "rmdir", "remove"})
#: what the senders may do on the loop: read a spooled attachment
_READS = Source._raw.__code__


class LoopCalls:
    """The calls this thread makes, of the spool's work and of the senders' reads."""

    def __init__(self) -> None:
        self.work: list[str] = []
        self.reads = 0

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if frame.f_code is _READS:
                self.reads += 1
            elif frame.f_code in _SPOOL_WORK:
                self.work.append(_SPOOL_WORK[frame.f_code])
        elif event == "c_call" and getattr(arg, "__qualname__", "") in _C_WORK:
            self.work.append(arg.__qualname__)


@pytest.mark.anyio
async def test_the_spool_files_are_written_and_removed_off_the_loop(
    smtp: Callable[..., SMTPTestServer], db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """A message with a 3 MiB and a 2 MiB attachment, a 1.5 MiB text and a 1 MiB HTML
    part drains from its chunks: no spool file is made, written or removed on the loop's
    thread, the senders read the spooled attachments there, the spool is empty after
    the attempt, and the server gets every byte."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    message, by_path, in_memory = large_message(tmp_path)
    server = smtp()
    calls = LoopCalls()
    async with Mailer.from_config(
        {"providers": [smtp_entry("s", server.port, 1)], "outbox": fast_outbox(db_url)}
    ) as mailer:
        mid = await mailer.enqueue(message)
        sys.setprofile(calls)
        try:
            done = await mailer.drain(timeout=30)
        finally:
            sys.setprofile(None)
        assert done == {"sent": 1}
        assert list(spool.iterdir()) == []
    assert calls.work == []
    assert calls.reads >= 2  # both large attachments, read from their spool files
    assert server.received() == {mid: 1}
    with server.state.lock:
        (envelope,) = server.state.messages
    sent = envelope.original_content or envelope.content
    assert isinstance(sent, bytes)
    parsed = email.message_from_bytes(sent)
    payloads = {p.get_filename(): p.get_payload(decode=True) for p in parsed.walk()}
    assert payloads["big.bin"] == by_path and payloads["mem.bin"] == in_memory
    bodies = [
        p.get_payload(decode=True).replace(b"\r\n", b"\n")
        for p in parsed.walk()
        if not p.is_multipart() and p.get_filename() is None
    ]
    assert bodies == [f"{message.text}".rstrip("\n").encode(), f"{message.html}".encode()]


def open_in(folder: Path) -> list[str]:
    """This process's open files under ``folder`` (an anonymous ``O_TMPFILE`` text too:
    its link reads ``folder/#N (deleted)``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


@pytest.mark.anyio
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")
@pytest.mark.parametrize("how", ["task.cancel()", "anyio scope"])
async def test_a_load_cancelled_midway_leaves_no_file_open_or_on_disk(
    how: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Cancelled (a plain ``task.cancel()``, or an anyio scope, as a drain's timeout
    does: every later await of the task is cancelled too, so the removal's wait must be
    shielded) while the attachment's second chunk is being read, after both texts were
    spooled: the spool folder is removed and every spool file closed when the task ends,
    although the removal runs in a worker thread (no timing: the read waits on an event
    that never comes)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    message, _, _ = large_message(tmp_path)
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    split = _chunked.split(message, rendering)
    assert split is not None
    message_json, raw, parts = split
    chunks = {(p.part, seq): chunk for p in parts for seq, chunk in enumerate(p.chunks())}
    assert (0, 1) in chunks  # the 3 MiB attachment has a second chunk
    reached, never = asyncio.Event(), asyncio.Event()

    async def read(row: int, part: int, seq: int) -> bytes | None:
        if (part, seq) == (0, 1):
            reached.set()
            await never.wait()
        return chunks.get((part, seq))

    scope = anyio.CancelScope()

    async def load() -> None:
        with scope:
            async with _chunked.loaded(Stored(1, message_json, raw), read):
                raise AssertionError("the load was to be cancelled before it finished")
        assert how == "anyio scope" and scope.cancelled_caught

    task = asyncio.get_running_loop().create_task(load())
    await reached.wait()
    (folder,) = spool.iterdir()
    assert [p.name for p in folder.iterdir()] == ["0"]  # the attachment's copy, begun
    assert len(open_in(spool)) == 3  # the two spooled texts and the copy
    if how == "anyio scope":
        scope.cancel()
        await task
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert list(spool.iterdir()) == []
    assert open_in(spool) == []


def test_a_spooled_text_refuses_a_write_after_it_is_closed(tmp_path: Path) -> None:
    """The drain appends in a worker thread and may close the text from another (a
    cancelled attempt): a write that comes after the close is refused, never made on the
    descriptor's number, which another file may have been given since."""
    text = SpooledText()
    text.append("caf\u00e9\n".encode())
    text.close()
    with (tmp_path / "other").open("wb+") as other:  # may well reuse the number
        with pytest.raises(MessageError, match="closed while it was being written"):
            text.append(b"late\n")
        other.seek(0)
        assert other.read() == b""
    assert (text.chars, text.nbytes) == (5, 6)
