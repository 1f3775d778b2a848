"""The streamed pieces of a rendering: bodies encoded chunk by chunk each time they are sent.

A message with a large attachment or a large text or HTML part is not rendered whole:
:func:`mailer._message.mime.render` keeps a piece in the body's place that encodes it
when the message is sent, chunk by chunk, so a 50 MiB body is never held encoded whole
and no single step holds the event loop (or, in a worker thread, the GIL) for long.

* :class:`Source`: an attachment (a file or the caller's bytes) as base64;
* :class:`TextSource`: a text or HTML part of at least :data:`STREAM_THRESHOLD`
  characters as 7bit, quoted-printable or base64, the very bytes the whole-part
  renderer writes (the tests compare both);
* :class:`Rendering`: the message as a sequence of checked bytes segments and sources.

Each source knows its encoded ``size`` before it is read (SMTP's ``SIZE=``, an HTTP
``Content-Length``) and how many of its lines start with "." (``dots``, for SMTP's
dot-stuffing); everything that is fixed per message (Date, Message-ID, boundaries, the
transfer encoding) is fixed when the rendering is made, so every attempt sends the same
bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.lowlevel

from .._errors import MessageError
from .spooled import SpooledText
from .transfer import as_7bit, mostly_non_ascii

if TYPE_CHECKING:
    from . import Attachment

__all__ = [
    "STREAM_CHUNK",
    "STREAM_THRESHOLD",
    "TEXT_CHUNK",
    "Rendering",
    "Source",
    "Streamed",
    "TextSource",
    "encoded_size",
    "stat_path",
]

CRLF = b"\r\n"
_B64_LINE = 57  # input bytes of one 76-character base64 line
#: attachments at least this large (bytes before encoding), and text or HTML parts at
#: least this long (characters), are encoded lazily, in chunks
STREAM_THRESHOLD = 1024 * 1024
#: input bytes per chunk of a streamed attachment: 3,072 lines, about 234 KiB encoded,
#: a few milliseconds of base64 (which holds the GIL) between yields to the event loop
STREAM_CHUNK = 57 * 3072
#: characters per slice of a streamed text part (cut after a newline): well under 1 ms of
#: normalizing, checking and encoding each, which hold the GIL like base64 does
TEXT_CHUNK = 64 * 1024


def encoded_size(size: int) -> int:
    """Length of the base64 body of ``size`` input bytes: 76-column CRLF lines, without
    the final CRLF."""
    if not size:
        return 0
    chars = (size + 2) // 3 * 4
    return chars + 2 * ((chars + 75) // 76 - 1)


class Source:
    """A large attachment's base64 body, encoded chunk by chunk each time it is sent.

    By construction it is wire-safe without a scan: 76-column lines, CRLF, only the
    base64 alphabet (no line starts with "."), no final CRLF (the part's writer adds it).

    A file is fingerprinted when the message is rendered (size and modification time)
    and hashed (SHA-256) on the first complete pass; every later pass is checked
    against both, and a difference raises MessageError *before* the pass ends, so a
    changed file never goes out under the same Message-ID (and DKIM signature).
    """

    __slots__ = ("_digest", "_lock", "attachment", "mtime_ns", "path", "raw_size", "size")
    #: lines that start with "." (for dot-stuffing): none in base64
    dots = 0

    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment
        self.path: Path | None = attachment.path
        self.mtime_ns: int | None = None
        if self.path is not None:
            st = stat_path(self.path)
            self.raw_size, self.mtime_ns = st.st_size, st.st_mtime_ns
        else:
            assert attachment.content is not None
            self.raw_size = len(attachment.content)
        #: encoded bytes, as sent (no final CRLF)
        self.size = encoded_size(self.raw_size)
        self._digest: bytes | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Refuse a file that changed since the rendering (size or mtime): cheap, no read."""
        if self.path is not None:
            self._same(stat_path(self.path))

    def _same(self, st: os.stat_result) -> None:
        if (st.st_size, st.st_mtime_ns) != (self.raw_size, self.mtime_ns):
            raise self._changed("its size or modification time")

    def _changed(self, what: str) -> MessageError:
        return MessageError(
            f"attachment file {str(self.path)!r} changed since the message was rendered "
            f"({what} differs): refusing to send different content under the same "
            "Message-ID; build a new Message to send the new file"
        )

    def _raw(self) -> Iterator[bytes | memoryview]:
        """The attachment's bytes in STREAM_CHUNK pieces, checked against the fingerprint."""
        if self.path is None:
            assert self.attachment.content is not None
            view = memoryview(self.attachment.content)
            for i in range(0, len(view), STREAM_CHUNK):
                yield view[i : i + STREAM_CHUNK]
            return
        digest = hashlib.sha256()
        read = 0
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise MessageError(
                f"attachment file {str(self.path)!r} cannot be read: {exc.strerror}"
            ) from None
        with f:
            self._same(os.fstat(f.fileno()))
            while True:
                chunk = f.read(STREAM_CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                if read > self.raw_size:
                    raise self._changed("its size")
                digest.update(chunk)  # hashlib releases the GIL for large buffers
                if read == self.raw_size:
                    # the last chunk is checked before it is handed out: an attempt
                    # never sends the end of a file that changed under it
                    self._same(os.fstat(f.fileno()))
                    if f.read(1):
                        raise self._changed("its size")
                    self._settle(digest.digest())
                yield chunk
        if read != self.raw_size:
            raise self._changed("its size")
        if not read:
            self._settle(digest.digest())

    def raw_chunks(self) -> Iterator[bytes | memoryview]:
        """The attachment's own bytes (not encoded), checked as :meth:`chunks` checks
        them: what the outbox stores of a large attachment."""
        return self._raw()

    def _settle(self, digest: bytes) -> None:
        with self._lock:
            if self._digest is None:
                self._digest = digest
            elif self._digest != digest:
                raise self._changed("its content (SHA-256)")

    def chunks(self) -> Iterator[bytes]:
        """The encoded body in pieces of about 234 KiB (the last without its CRLF)."""
        written = 0
        for raw in self._raw():
            chunk = base64.encodebytes(raw).replace(b"\n", CRLF)
            written += len(chunk)
            yield chunk[:-2] if written >= self.size + 2 else chunk


class TextSource:
    """A large text or HTML part's body, encoded slice by slice each time it is sent.

    The bytes are those the whole-part renderer writes for the same text: newlines made
    LF, a final newline added, then 7bit when every line is printable ASCII and under
    999 characters, base64 when more than a third of the UTF-8 bytes are not ASCII, else
    quoted-printable; CRLF line ends, the final CRLF left to the part's writer.

    The text is cut into slices of about :data:`TEXT_CHUNK` characters, each just after
    a newline, so every slice starts a line: normalizing, checking and encoding a slice
    then gives exactly that slice's share of the whole (``binascii.b2a_qp`` works line
    by line, and the base64 input is regrouped into whole 57-byte lines across slices).
    A line longer than a slice stays whole in its slice. The transfer encoding, the size
    and the count of lines that start with "." are found by one pass over the slices
    when the rendering is made (two for quoted-printable, whose size needs the encoding).
    The caller's string is kept, not copied: it is the message's own ``text`` or ``html``.
    A :class:`SpooledText` (a loaded outbox row's text, in a temporary file) is read
    slice by slice the same way, cut after newlines by the same rule, so it gives the
    same bytes without the text ever being whole in memory.
    """

    __slots__ = ("_cuts", "_text", "cte", "dots", "size")

    def __init__(self, text: str | SpooledText, *, scan: bool = True) -> None:
        self._text = text
        self._cuts = _line_cuts(text, TEXT_CHUNK) if isinstance(text, str) else []
        self.cte, self.size, self.dots = "", 0, 0
        if scan:
            for _ in self._scan():
                pass

    @classmethod
    async def made(cls, text: str | SpooledText) -> TextSource:
        """The source of ``text``, its pass made on the event loop a slice at a time
        (the loop's turn after each): no thread, so no wait for the GIL or the CPU."""
        source = cls(text, scan=False)
        for _ in source._scan():
            await anyio.lowlevel.checkpoint()
        return source

    def _scan(self) -> Iterator[None]:
        """Find the transfer encoding, the encoded size and the "." lines; yields after
        each slice (a caller may give the event loop a turn there)."""
        seven_bit = True
        utf8 = ascii_ = chars = newlines = dots = 0
        for piece in self._slices():
            if seven_bit and as_7bit(piece) is None:  # the whole-part renderer's rule
                seven_bit = False
            if piece.isascii():  # O(1) on a str
                utf8 += len(piece)
                ascii_ += len(piece)
            else:
                utf8 += len(piece.encode("utf-8"))
                ascii_ += len(piece.encode("ascii", "ignore"))
            chars += len(piece)
            newlines += piece.count("\n")
            dots += piece.count("\n.") + piece.startswith(".")
            yield
        if seven_bit:
            self.cte, self.size, self.dots = "7bit", chars + newlines - 2, dots
        elif mostly_non_ascii(utf8, ascii_):
            self.cte, self.size, self.dots = "base64", encoded_size(utf8), 0
        else:
            size = dots = 0
            for qp in self._qp():
                size += len(qp) + qp.count(b"\n")
                dots += qp.count(b"\n.") + qp.startswith(b".")
                yield
            self.cte, self.size, self.dots = "quoted-printable", size - 2, dots

    def is_of(self, text: str | SpooledText) -> bool:
        """Whether this source encodes ``text`` (the very object, not an equal copy)."""
        return self._text is text

    def _cut(self) -> Iterator[str]:
        """The text as it is, in slices that each end just after a newline but the last."""
        text = self._text
        if isinstance(text, str):
            for start, end in self._cuts:
                yield text[start:end]
        else:
            yield from text.slices()

    def _slices(self) -> Iterator[str]:
        """The text in slices with LF newlines, the last one ending with a newline."""
        held: str | None = None
        for piece in self._cut():
            if held is not None:
                yield held
            held = piece.replace("\r\n", "\n").replace("\r", "\n")
        if not held or not held.endswith("\n"):
            held = (held or "") + "\n"
        yield held

    def _qp(self) -> Iterator[bytes]:
        for piece in self._slices():
            yield binascii.b2a_qp(piece.encode("utf-8"), quotetabs=False, istext=True)

    def _encoded(self) -> Iterator[bytes]:
        """The body's CRLF chunks, each ending with its CRLF (the final one too)."""
        if self.cte == "7bit":
            for piece in self._slices():
                yield piece.encode("ascii").replace(b"\n", CRLF)
        elif self.cte == "quoted-printable":
            for qp in self._qp():
                yield qp.replace(b"\n", CRLF)
        else:
            carry = b""
            for piece in self._slices():
                data = carry + piece.encode("utf-8")
                cut = len(data) - len(data) % _B64_LINE
                carry = data[cut:]
                if cut:
                    yield base64.encodebytes(data[:cut]).replace(b"\n", CRLF)
            if carry:
                yield base64.encodebytes(carry).replace(b"\n", CRLF)

    def chunks(self) -> Iterator[bytes]:
        """The encoded body in pieces of a slice each (the last without its CRLF)."""
        held: bytes | None = None
        for chunk in self._encoded():
            if held is not None:
                yield held
            held = chunk
        if held is not None:
            yield held[:-2]

    def contains(self, marker: str) -> bool:
        """Whether ``marker`` (no CR or LF in it) appears in the encoded body.

        Only 7bit text can hold a MIME boundary ("=" is "=3D" in quoted-printable and
        only padding in base64); it is searched in the caller's text, slice by slice.
        """
        if self.cte != "7bit":
            return False
        text, overlap = self._text, len(marker) - 1
        if not isinstance(text, str):
            return text.contains(marker)
        return any(text.find(marker, start, end + overlap) >= 0 for start, end in self._cuts)

    def check(self) -> None:
        """Nothing to check: the text is the message's own, and it cannot change."""


def _line_cuts(text: str, size: int) -> list[tuple[int, int]]:
    """``text`` cut into ``(start, end)`` slices of about ``size`` characters, each
    ending just after a newline (LF, or a CR the normalizing turns into one) except the
    last; a line longer than ``size`` is not cut."""
    cuts: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while start < n:
        end = start + size
        if end >= n:
            cuts.append((start, n))
            break
        cut = text.rfind("\n", start, end) + 1
        if cut <= start:
            found = text.find("\n", end)
            cut = n if found < 0 else found + 1
        cuts.append((start, cut))
        start = cut
    return cuts or [(0, 0)]


#: a piece of a rendering encoded as it is sent
Streamed = Source | TextSource


class Rendering:
    """A message with large bodies: checked bytes segments and streamed pieces.

    Made once per message (Date, Message-ID and boundaries fixed in it). Segments are
    CRLF-only and each begins and ends at a line boundary of the message, apart from
    streamed pieces, whose last line the following segment's CRLF ends.
    """

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: Sequence[bytes | Streamed]) -> None:
        self.pieces: tuple[bytes | Streamed, ...] = tuple(pieces)
        self.size = sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)

    @property
    def sources(self) -> list[Source]:
        """The attachments streamed from a file or bytes (the pieces that can change)."""
        return [p for p in self.pieces if isinstance(p, Source)]

    def check(self) -> None:
        """Refuse to go on when a file changed since the rendering (before any I/O)."""
        for source in self.sources:
            source.check()

    def chunks(self) -> Iterator[bytes]:
        """The message in order, in pieces of a few hundred KiB at most (a bytes segment
        whole; the renderer keeps them small once a body is large)."""
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                yield from piece.chunks()

    def join(self) -> bytes:
        """The whole message as bytes (for providers that need it whole)."""
        return b"".join(self.chunks())


def stat_path(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise MessageError(
            f"attachment file {str(path)!r} cannot be read: {exc.strerror}"
        ) from None
