"""Outbox rows of large messages (issue 25): large attachments stored in chunks with the
row, the rendering kept as a manifest, and the drain sending the very bytes rendered at
enqueue, on SQLite and Postgres, with real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import email
import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import Mailer, Message, MessageError
from mailer._outbox import _chunked
from mailer._outbox.config import OutboxConfig
from mailer._outbox.worker import Outbox, open_store
from mailer.testing import ScriptedProvider, SMTPTestServer

from .chunked_kit import MiB, large_message
from .conftest import fast_outbox, rows, smtp_entry

pytestmark = pytest.mark.anyio


def chunk_rows(db_url: str) -> list[tuple[int, int, int, int]]:
    """(row, part, seq, length) of every stored chunk, in order."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            query = "SELECT id, part, seq, length(data) FROM outbox_chunk ORDER BY id, part, seq"
            return list(conn.execute(query))
    import psycopg

    with psycopg.connect(db_url) as conn:
        query = "SELECT id, part, seq, length(data) FROM mailer_outbox_chunk ORDER BY id, part, seq"
        return [tuple(r) for r in conn.execute(query)]


async def test_a_large_message_is_stored_in_chunks_and_sent_as_rendered(
    smtp: Callable[..., SMTPTestServer], db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """The row holds no attachment content, no large text and no rendering, only a
    manifest; the attachments' bytes and the texts' UTF-8 are in chunks; the file may
    vanish after enqueue; the drain sends the bytes rendered at enqueue and leaves no
    temporary file behind; purging the row deletes its chunks."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    message, by_path, in_memory = large_message(tmp_path)
    server = smtp()
    async with Mailer.from_config(
        {"providers": [smtp_entry("s", server.port, 1)], "outbox": fast_outbox(db_url)}
    ) as mailer:
        mid = await mailer.enqueue(message)
        (tmp_path / "big.bin").unlink()
        (row,) = rows(db_url)
        assert bytes(row["raw"]).startswith(_chunked.MARKER)
        assert len(row["raw"]) < 64 * 1024 and len(row["message"]) < 64 * 1024
        assert b"a small file" not in row["message"]  # small.txt is in the JSON as base64
        stored = chunk_rows(db_url)
        sizes = {p: sum(n for _, q, _, n in stored if q == p) for p in (0, 1)}
        assert sizes == {0: 3 * MiB + 7, 1: 2 * MiB}
        assert {q for _, q, _, _ in stored} == {_chunked.TEXT, _chunked.HTML, 0, 1}
        assert sum(n for _, q, _, n in stored if q == _chunked.HTML) == len(
            message.html.encode()  # type: ignore[union-attr]
        )
        assert max(n for *_, n in stored) <= _chunked.CHUNK
        assert await mailer.drain(timeout=30) == {"sent": 1}
        assert list(spool.iterdir()) == []
        assert chunk_rows(db_url)
        assert await mailer.outbox.purge("sent", 0.0) == 1
        assert chunk_rows(db_url) == [] and rows(db_url) == []
    assert server.received() == {mid: 1}
    with server.state.lock:
        (envelope,) = server.state.messages
    sent = envelope.original_content or envelope.content
    assert isinstance(sent, bytes)
    assert b"Bcc:" not in sent
    assert set(envelope.rcpt_tos) == {"u@example.org", "hidden@example.org"}
    parsed = email.message_from_bytes(sent)
    assert parsed["Message-ID"] == mid
    payloads = {p.get_filename(): p.get_payload(decode=True) for p in parsed.walk()}
    assert payloads["big.bin"] == by_path and payloads["mem.bin"] == in_memory
    assert payloads["small.txt"] == b"a small file\n"
    bodies = [
        p.get_payload(decode=True).replace(b"\r\n", b"\n")
        for p in parsed.walk()
        if not p.is_multipart() and p.get_filename() is None
    ]
    assert bodies == [f"{message.text}".rstrip("\n").encode(), f"{message.html}".encode()]


async def test_the_drain_sends_the_same_bytes_as_the_rendering_at_enqueue(
    smtp: Callable[..., SMTPTestServer], db_url: str, tmp_path: Path
) -> None:
    """Byte for byte, with every kind of streamed piece (file, bytes, 7bit text,
    quoted-printable HTML) and the file still in place to join the original rendering."""
    message, _, _ = large_message(tmp_path, small_path=False)
    server = smtp()
    async with Mailer.from_config(
        {"providers": [smtp_entry("s", server.port, 1)], "outbox": fast_outbox(db_url)}
    ) as mailer:
        await mailer.enqueue(message)
        assert await mailer.drain(timeout=30) == {"sent": 1}
    with server.state.lock:
        (envelope,) = server.state.messages
    rendered = message.render()
    assert not isinstance(rendered, bytes)
    sent = envelope.original_content or envelope.content
    assert sent == rendered.join()


async def test_a_provider_reading_attachments_gets_their_bytes(db_url: str, tmp_path: Path) -> None:
    """A provider that takes the attachments themselves (a JSON API) reads the stored
    bytes from the message the drain loaded."""
    message, by_path, in_memory = large_message(tmp_path)
    seen: dict[str, bytes] = {}

    def look(sent: Message) -> None:
        seen.update({a.filename or "": a.data() for a in sent.attachments})

    provider = ScriptedProvider("p", [look])
    async with Mailer(providers=[provider], outbox=OutboxConfig(**fast_outbox(db_url))) as mailer:
        await mailer.enqueue(message)
        assert await mailer.drain(timeout=30) == {"sent": 1}
    assert seen == {"big.bin": by_path, "mem.bin": in_memory, "small.txt": b"a small file\n"}


async def test_a_file_changed_after_rendering_stores_nothing(db_url: str, tmp_path: Path) -> None:
    """The file is read as the row is written, checked against the rendering's
    fingerprint: a change fails the enqueue, and neither the row nor any chunk stays."""
    message, _, _ = large_message(tmp_path)
    item = Outbox.prepare(message, chunked=True)
    assert item.parts and item.raw.startswith(_chunked.MARKER)
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * MiB + 8))
    store = open_store(OutboxConfig(**fast_outbox(db_url)))
    await store.open()
    try:
        with pytest.raises(MessageError, match="changed since the message was rendered"):
            await store.add(item)
        assert (await store.stats())["queued"] == 0
    finally:
        await store.close()
    assert chunk_rows(db_url) == []


async def test_small_and_unchunked_rows_are_stored_as_before(db_url: str, tmp_path: Path) -> None:
    """A small message's row is its rendering; ``chunked=False`` (the Django backend's
    single statement) keeps a large one whole, as before; both drain."""
    small = Message(sender="a@example.com", to="u@example.org", subject="s", text="hi")
    item = Outbox.prepare(small, chunked=True)
    assert item.raw == small.as_bytes() and item.parts == ()
    message, _, _ = large_message(tmp_path)
    whole = Outbox.prepare(message)
    assert whole.parts == () and not _chunked.is_chunked(whole.raw)
    provider = ScriptedProvider("p")
    async with Mailer(providers=[provider], outbox=OutboxConfig(**fast_outbox(db_url))) as mailer:
        store = mailer.outbox.store
        await store.open()
        assert await store.add(whole)
        assert await mailer.drain(timeout=30) == {"sent": 1}
    assert provider.raw == [whole.raw]


async def test_a_retried_large_message_sends_the_same_bytes_again(
    db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """A first attempt that fails before its commit point, then a second: each attempt
    spools the attachments anew and the accepted message is the rendering at enqueue;
    no temporary file outlives its attempt."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    message, _, _ = large_message(tmp_path, small_path=False)
    provider = ScriptedProvider("p", ["transient", "ok"])
    outbox = OutboxConfig(**fast_outbox(db_url))
    async with Mailer([provider], retry={"attempts": 1}, outbox=outbox) as mailer:
        await mailer.enqueue(message)
        assert await mailer.drain(timeout=30) == {"queued": 1, "sent": 1}
        (item,) = await mailer.outbox.items(state="sent")
    assert item.attempts == 2 and provider.calls == 2
    rendered = message.render()
    assert not isinstance(rendered, bytes)
    assert provider.raw == [rendered.join()]
    assert list(spool.iterdir()) == []


def test_a_process_killed_while_writing_chunks_leaves_no_row_and_no_chunk(
    db_url: str, tmp_path: Path
) -> None:
    """SIGKILL after two of a large attachment's chunks were written: the transaction
    that adds the row and its chunks never committed, so neither is there, and the
    outbox takes the same message afterwards."""
    import asyncio
    import signal
    import subprocess
    import sys

    (tmp_path / "big.bin").write_bytes(os.urandom(4 * MiB))
    script = Path(__file__).with_name("crash_enqueue.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    crashed = subprocess.run(
        [sys.executable, str(script), db_url, str(tmp_path / "big.bin")],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    assert rows(db_url) == [] and chunk_rows(db_url) == []

    async def again() -> dict[str, int]:
        provider = ScriptedProvider("p")
        async with Mailer([provider], outbox=OutboxConfig(**fast_outbox(db_url))) as mailer:
            message = Message(sender="a@example.com", to="u@example.org", attachments=[
                tmp_path / "big.bin"])  # fmt: skip
            await mailer.enqueue(message)
            return await mailer.drain(timeout=30)

    assert asyncio.run(again()) == {"sent": 1}
    assert len(chunk_rows(db_url)) == 4
