"""Outbox rows of large messages: the body stored and read back in chunks, never whole.

A message whose rendering streams (an attachment or a text part of at least
:data:`~mailer._message.stream.STREAM_THRESHOLD`, see :class:`Rendering`) used to be
stored as its JSON with every attachment inside it in base64, plus the rendering joined
into one value: a 50 MiB attachment cost 408 MiB of memory to enqueue and 304 MiB to
drain. Such a row is now stored in three pieces, all in the one transaction that adds
the row (a crash never leaves half a message):

* the message's JSON, with each large attachment's content left empty (a placeholder
  that keeps its name, type and Content-ID), and a large text or HTML part empty too;
* each large attachment's bytes (raw, not base64) and each large text part's UTF-8, in
  chunks of about 1 MiB in a side table keyed by ``(row, part, seq)``, ``part`` being
  the attachment's index (:data:`TEXT` and :data:`HTML` for the texts);
* in the row's ``raw`` column, instead of the rendered bytes, :data:`MARKER`, a one-line
  JSON manifest and the rendering's bytes segments (headers, boundaries, small parts)
  one after the other: the manifest says, in order, how long each segment is and which
  attachment or text part fills each streamed place, with what a text part's encoding
  pass found (transfer encoding, size, "." lines), so the drain does not scan it again.

A rendered message starts with a header line, never with NUL, so :data:`MARKER` cannot
be confused with an old row's bytes: old rows (and every small message, whose row is
unchanged) load as before. The claim reads the row as it always did.

To send, :func:`loaded` copies each large attachment's chunks into a temporary file,
and each large text part's into a :class:`~mailer._message.spooled.SpooledText` (an
anonymous temporary file), a chunk at a time, and rebuilds the rendering: the same
segments, so the same Date, Message-ID and boundaries, a :class:`Source` reading each
attachment's file and a :class:`TextSource` reading each spooled text slice by slice,
which every path (SMTP, DKIM, the HTTP raw bodies) already streams. So no body is ever
whole in memory: a loaded message's ``text`` holds the text only when someone reads it
(a JSON API provider does; see :mod:`mailer._message.spooled`). A file, not the store:
the senders read their sources synchronously, between the event loop's turns, and the
Postgres driver can only be awaited. The attachment itself is given by that path, so a
provider that takes attachments in a JSON API reads the same bytes. Both kinds of file
are gone when the attempt ends.

The file system's work on these files runs in a worker thread, never on the event loop:
making them, writing each chunk and removing them (:func:`_discard`). A 1 MiB write into
the page cache usually takes about 1 ms of kernel time, but on a machine whose disk is
busy writing back (another process's writes) it took 11-17 ms in one step, and freeing a
50 MiB file's pages when it is removed takes 3-6 ms: together the loop's longest steps
on the 50 MiB drain (docs/benchmarks.md, "The 50 MiB attachment drain's longest step").
The senders' reads of the files stay on the loop: a read from the page cache does not
wait for the disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from .._errors import MessageError
from .._message import Attachment, Message
from .._message.spooled import SpooledText, body_of, spool_into
from .._message.stream import STREAM_CHUNK, STREAM_THRESHOLD, Rendering, Source, TextSource
from .._message.wire import check_line_endings
from ._load import load

if TYPE_CHECKING:
    import sqlite3

    import asyncpg


__all__ = [
    "CHUNK",
    "MARKER",
    "PG_SCHEMA",
    "SQLITE_SCHEMA",
    "StoredPart",
    "dbapi_write",
    "is_chunked",
    "loaded",
    "pg_write",
    "split",
    "sqlite_write",
    "stored_form",
]

#: what a chunked row's ``raw`` starts with (a rendered message starts with a header)
MARKER = b"\x00mailer-chunked-v1\n"
#: bytes per stored chunk: six of the renderer's read pieces, about 1 MiB
CHUNK = STREAM_CHUNK * 6

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_chunk (
    id          INTEGER NOT NULL,
    part        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    PRIMARY KEY (id, part, seq)
)
"""
#: rows deleted with their message (``ON DELETE CASCADE``); stored as they are, not
#: compressed (attachments are mostly compressed already, and pglz would try each one)
PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailer_outbox_chunk (
    id          BIGINT  NOT NULL REFERENCES mailer_outbox (id) ON DELETE CASCADE,
    part        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    data        BYTEA   NOT NULL,
    PRIMARY KEY (id, part, seq)
);
DO $$ BEGIN
    IF (SELECT attstorage FROM pg_attribute WHERE attname = 'data'
        AND attrelid = 'mailer_outbox_chunk'::regclass) <> 'e' THEN
        -- once, when the table is made: the ALTER takes a lock that would wait for writers
        ALTER TABLE mailer_outbox_chunk ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END $$;
"""
_SQLITE_INSERT = "INSERT INTO outbox_chunk (id, part, seq, data) VALUES (?, ?, ?, ?)"
_PG_INSERT = "INSERT INTO mailer_outbox_chunk (id, part, seq, data) VALUES ($1, $2, $3, $4)"
SQLITE_READ = "SELECT data FROM outbox_chunk WHERE id = ? AND part = ? AND seq = ?"
PG_READ = "SELECT data FROM mailer_outbox_chunk WHERE id = $1 AND part = $2 AND seq = $3"


@dataclass(frozen=True, slots=True)
class StoredPart:
    """One large attachment's bytes, or a large text part's UTF-8, to be written in
    chunks with the row."""

    #: the attachment's index in ``Message.attachments``; :data:`TEXT` or :data:`HTML`
    part: int
    #: the attachment's bytes or the text's characters (checked when it is read back)
    size: int
    #: the chunks, read (a file: checked against the rendering's fingerprint) or
    #: encoded as they are written
    chunks: Callable[[], Iterator[bytes]]


#: the ``part`` of a message's text and HTML
TEXT, HTML = -1, -2
_PART_OF = {"text": TEXT, "html": HTML}
#: characters of a text encoded per chunk: at most 1 MiB of UTF-8
_TEXT_CHUNK = CHUNK // 4


def _attachment_chunks(source: Source) -> Iterator[bytes]:
    """The attachment's bytes in :data:`CHUNK` pieces; MessageError if a file changed
    since the rendering (the write is then undone with the row)."""
    held: list[bytes | memoryview] = []
    length = 0
    for piece in source.raw_chunks():
        held.append(piece)
        length += len(piece)
        if length >= CHUNK:
            yield b"".join(held)
            held, length = [], 0
    if held:
        yield b"".join(held)


def _text_chunks(text: str) -> Iterator[bytes]:
    for start in range(0, len(text), _TEXT_CHUNK):
        yield text[start : start + _TEXT_CHUNK].encode("utf-8")


def is_chunked(raw: bytes | None) -> bool:
    return raw is not None and raw.startswith(MARKER)


def _large(att: Attachment) -> bool:
    """Whether the renderer streams this attachment (mime._attachment_part's rule)."""
    if att.content_type == "message/rfc822":
        return False
    if att.content is not None:
        return len(att.content) >= STREAM_THRESHOLD
    assert att.path is not None
    try:
        return att.path.stat().st_size >= STREAM_THRESHOLD
    except OSError:
        return False  # with_content() reports it


def stored_form(message: Message) -> Message:
    """``message`` with its small attachments' files read (they go in the JSON) and its
    large ones left as they are (they are read once, as the row is written)."""
    if all(a.path is None or _large(a) for a in message.attachments):
        return message
    attachments = [a if _large(a) else a.with_content() for a in message.attachments]
    data = message.model_dump(by_alias=False, exclude_defaults=True)
    data.update(attachments=attachments, message_id=message.message_id)
    return Message(**data)


def split(
    message: Message, rendering: Rendering
) -> tuple[bytes, bytes, tuple[StoredPart, ...]] | None:
    """The row for a streamed rendering: the JSON without large attachments' content,
    ``raw`` (:data:`MARKER` and the manifest) and the attachments' parts. None when a
    streamed piece is not the message's own text, html or attachment (the row is then
    stored whole, as before)."""
    pieces: list[dict[str, Any]] = []
    segments: list[bytes] = []
    parts: list[StoredPart] = []
    placeholders = list(message.attachments)
    texts: dict[str, str] = {}
    for piece in rendering.pieces:
        if isinstance(piece, bytes):
            pieces.append({"b": len(piece)})
            segments.append(piece)
        elif isinstance(piece, TextSource):
            which = next((w for w in ("text", "html") if _is_of(piece, message, w)), None)
            if which is None or which in texts:
                return None
            text = texts[which] = getattr(message, which)
            parts.append(StoredPart(_PART_OF[which], len(text), partial(_text_chunks, text)))
            pieces.append({"t": which, "cte": piece.cte, "size": piece.size, "dots": piece.dots})
        else:
            found = [i for i, a in enumerate(message.attachments) if a is piece.attachment]
            if len(found) != 1:
                return None
            index = found[0]
            att = message.attachments[index]
            placeholders[index] = Attachment(
                content=b"",
                filename=att.filename,
                content_type=att.content_type,
                inline=att.inline,
                content_id=att.content_id,
            )
            parts.append(StoredPart(index, piece.raw_size, partial(_attachment_chunks, piece)))
            pieces.append({"a": index, "size": piece.raw_size})
    manifest = {
        "pieces": pieces,
        "size": rendering.size,
        "texts": {w: len(t) for w, t in texts.items()},
    }
    head = json.dumps(manifest, separators=(",", ":")).encode("ascii")  # no raw newline
    raw = b"".join((MARKER, head, b"\n", *segments))
    # the large texts are left out of the JSON too ("" in their place: a valid Message)
    copy = message.model_copy(update={"attachments": placeholders, **dict.fromkeys(texts, "")})
    return copy.model_dump_json().encode(), raw, tuple(parts)


def _is_of(source: TextSource, message: Message, which: str) -> bool:
    text = body_of(message, which)
    return text is not None and source.is_of(text)


def sqlite_write(conn: sqlite3.Connection, row: int, parts: tuple[StoredPart, ...]) -> None:
    """The parts' chunks, in the transaction (and savepoint) that adds row ``row``."""
    for part in parts:
        for seq, chunk in enumerate(part.chunks()):
            conn.execute(_SQLITE_INSERT, (row, part.part, seq, chunk))


async def pg_write(conn: asyncpg.Connection, row: int, parts: tuple[StoredPart, ...]) -> None:
    """The parts' chunks, in the transaction that adds row ``row`` (one statement a
    chunk: a file's chunk is read between two of them, the loop free meanwhile)."""
    for part in parts:
        for seq, chunk in enumerate(part.chunks()):
            await conn.execute(_PG_INSERT, row, part.part, seq, chunk)


def dbapi_write(cursor: Any, row: int, parts: tuple[StoredPart, ...]) -> None:
    """The parts' chunks through a DB-API cursor with ``%s`` placeholders (psycopg: the
    Django backend's connection, inside the app's transaction)."""
    sql = _PG_INSERT.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s")
    sql = sql.replace("$4", "%s")
    for part in parts:
        for seq, chunk in enumerate(part.chunks()):
            cursor.execute(sql, (row, part.part, seq, chunk))


#: reads chunk ``seq`` of part ``part`` of a row: None past the last one
ReadChunk = Callable[[int, int, int], Awaitable[bytes | None]]


class StoredRow(Protocol):
    """What :func:`loaded` reads of a row (a claim's :class:`~.store.Claimed`, or
    :class:`~.store.Stored` for ``mailer outbox reconcile``)."""

    @property
    def row(self) -> int: ...
    @property
    def message_json(self) -> bytes: ...
    @property
    def raw(self) -> bytes | None: ...
    @property
    def digest(self) -> bytes | None: ...


def ordinary(item: StoredRow) -> Message | None:
    """An ordinary row's message, ready to send (its stored rendering attached), or
    None for a chunked one (:func:`loaded`). Nothing to clean up after it, so the
    drain's hot path takes it without a context manager (~2 us a message)."""
    if is_chunked(item.raw):
        return None
    message = load(item.message_json, item.digest)  # validated again only if unsealed
    if item.raw is not None:
        # SMTP sends a rendering as it is, trusting render()'s wire check; these bytes
        # were checked when stored, but a row can be edited or damaged since
        check_line_endings(item.raw, f"outbox row {item.row}: its stored rendering")
        private = message.__pydantic_private__
        assert private is not None
        # the stored bytes, not a fresh rendering (which would differ in its Date)
        private["_rendered"] = item.raw
    return message


@asynccontextmanager
async def loaded(item: StoredRow, read: ReadChunk) -> AsyncIterator[Message]:
    """The row's message, ready to send: its stored rendering, large attachments and
    texts from temporary files (removed on exit), or as before for an ordinary row."""
    plain = ordinary(item)
    if plain is not None:
        yield plain
        return
    message = load(item.message_json, item.digest)  # validated again only if unsealed
    assert item.raw is not None
    end = item.raw.index(b"\n", len(MARKER))
    manifest = json.loads(item.raw[len(MARKER) : end])
    manifest["data"] = memoryview(item.raw)[end + 1 :]
    spool = Path(await anyio.to_thread.run_sync(partial(tempfile.mkdtemp, prefix="mailer-outbox-")))
    texts: dict[str, SpooledText] = {}
    try:
        yield await _rebuild(message, manifest, item.row, read, spool, texts)
    finally:
        await _discard(texts, spool)


def _remove(texts: dict[str, SpooledText], spool: Path) -> None:
    """Close the spooled texts and remove the spool folder (both idempotent)."""
    for text in texts.values():
        text.close()
    shutil.rmtree(spool, ignore_errors=True)


async def _discard(texts: dict[str, SpooledText], spool: Path) -> None:
    """The loaded row's files removed in a worker thread (the kernel frees their pages:
    3-6 ms for 50 MiB), and waited for, so that they are gone when the attempt ends.

    If the wait is interrupted (a second ``task.cancel()``, which anyio's shield does not
    stop) or no thread can be had (an interpreter shutting down), they are removed here,
    on the loop, as before: nothing is left behind either way.
    """
    try:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove, texts, spool)
    except Exception:
        _remove(texts, spool)
    except BaseException:
        _remove(texts, spool)
        raise


async def _rebuild(
    message: Message,
    manifest: dict[str, Any],
    row: int,
    read: ReadChunk,
    spool: Path,
    texts: dict[str, SpooledText],
) -> Message:
    for which, chars in manifest["texts"].items():
        # in ``texts`` as soon as it is made: closed on exit whatever happens (made in a
        # thread, like every file of the spool; one lost to a cancel here is closed by
        # the collector)
        texts[which] = await anyio.to_thread.run_sync(SpooledText)
        await _text(read, row, _PART_OF[which], chars, texts[which])
    attachments = list(message.attachments)
    spooled = False
    for entry in manifest["pieces"]:
        if "a" in entry:
            spooled = True
            index, size = entry["a"], entry["size"]
            att = attachments[index]
            path = spool / f"{index}"
            await _copy(read, row, index, size, path)
            attachments[index] = Attachment(
                path=path,
                filename=att.filename,
                content_type=att.content_type,
                inline=att.inline,
                content_id=att.content_id,
            )
    if spooled or texts:
        message = message.model_copy(update={"attachments": attachments})
        spool_into(message, texts)
    pieces: list[bytes | Source | TextSource] = []
    data, at = manifest["data"], 0
    for entry in manifest["pieces"]:
        if "b" in entry:
            segment = bytes(data[at : at + entry["b"]])
            check_line_endings(segment, f"outbox row {row}: its stored rendering")
            pieces.append(segment)
            at += entry["b"]
        elif "a" in entry:
            pieces.append(Source(attachments[entry["a"]]))
        else:
            source = TextSource(texts[entry["t"]], scan=False)
            source.cte, source.size, source.dots = entry["cte"], entry["size"], entry["dots"]
            pieces.append(source)
    rendering = Rendering(pieces)
    if rendering.size != manifest["size"]:
        raise MessageError(
            f"outbox row {row}: its stored message does not add up "
            f"({rendering.size} bytes, {manifest['size']} expected)"
        )
    private = message.__pydantic_private__
    assert private is not None
    private["_rendered"] = rendering
    return message


async def _text(read: ReadChunk, row: int, part: int, chars: int, into: SpooledText) -> None:
    """A text part's chunks (each whole characters) into ``into``, a chunk at a time,
    each decoded (to count its characters) and written in a worker thread: never the
    text whole in memory, nor a chunk's write on the loop."""
    seq = 0
    while (chunk := await read(row, part, seq)) is not None:
        await anyio.to_thread.run_sync(into.append, chunk)
        seq += 1
    if into.chars != chars:
        raise MessageError(
            f"outbox row {row}: its text part has {into.chars} characters stored, {chars} expected"
        )


def _create(path: Path) -> BufferedWriter:
    return path.open("wb")


async def _copy(read: ReadChunk, row: int, part: int, size: int, path: Path) -> None:
    """Part ``part``'s chunks into ``path``, one at a time, each written in a worker
    thread (the next one is read only after: one chunk in memory).

    The file is closed on the loop: closing a named file frees nothing (its pages go when
    :func:`_discard` removes it), and if a cancel interrupts the wait for a write, the
    buffered file's close waits for that write to end, so no write outlives the file."""
    written = seq = 0
    f = await anyio.to_thread.run_sync(_create, path)
    try:
        while (chunk := await read(row, part, seq)) is not None:
            await anyio.to_thread.run_sync(f.write, chunk)
            written += len(chunk)
            seq += 1
    finally:
        f.close()
    if written != size:
        raise MessageError(
            f"outbox row {row}: attachment {part} has {written} bytes stored, {size} expected"
        )
