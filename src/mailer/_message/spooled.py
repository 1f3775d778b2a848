"""A large text or HTML part kept in a temporary file, not as a ``str``: what the outbox's
drain gives a message whose large text it read back from the store.

A message rendered for sending streams a large text part from its ``str``
(:class:`~mailer._message.stream.TextSource`), a slice at a time; but a message loaded
from an outbox row would first have to rebuild that ``str`` from the stored chunks: 50 MiB
of text held whole (plus the chunks' copies while they are joined, one 18 ms step on the
loop) only to be cut into slices again. A :class:`SpooledText` is the text's UTF-8 in an
anonymous temporary file (unlinked at once: nothing is left behind by a crash), written
chunk by chunk as the store hands them over, and read back slice by slice by the same
:class:`TextSource` that streams a ``str``: so the drain streams a large text exactly as
a direct send does, from a file instead of memory, and sends the same bytes.

The message keeps the public API: its ``text`` (or ``html``) field holds
:data:`SPOOLED`, a placeholder no caller can pass (it holds a NUL, which no body may),
and the field's descriptor (:class:`Body`, below) reads the file into a ``str``
the first time someone asks for ``message.text``, and keeps it. That read costs what the
old drain always paid (the text whole in memory, about 0.1 s for 50 MiB); the streaming
senders (SMTP, SES raw, Mailgun MIME) never ask, and a JSON API provider, which puts the
text in its request anyway, does. :func:`body_of` is the renderer's way to the body
without reading it.
"""

from __future__ import annotations

import codecs
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._errors import MessageError

if TYPE_CHECKING:
    from .model import Message

__all__ = [
    "BODIES",
    "SPOOLED",
    "Body",
    "SpooledText",
    "body_of",
    "field_values",
    "is_set",
    "read_body",
    "spool_into",
]

#: the ``text``/``html`` field's value while the body is in a :class:`SpooledText` (a
#: fresh object, compared by identity: no caller's string is this one, and a body with
#: a NUL is refused anyway)
SPOOLED = "".join(("\x00", "spooled"))
#: bytes read per slice: at most this many characters of normalizing and encoding per
#: step, as :data:`~mailer._message.stream.TEXT_CHUNK` is for a ``str``
_SLICE = 64 * 1024
#: bytes read per step when the whole text is wanted
_READ = 1024 * 1024


class SpooledText:
    """A text's UTF-8 in an anonymous temporary file, read by offset (``os.pread``: no
    shared position, so two readers, or a reader in a worker thread, never interfere).

    Written once, with :meth:`append`, before anyone reads it; :meth:`close` (or the
    collector) closes the file, after which reading raises MessageError. The outbox
    appends from a worker thread (a write into the page cache can take milliseconds of
    kernel time) and may close from another: a lock keeps a close out of a write in
    progress, so no write ever lands on a descriptor number reused since.
    """

    __slots__ = ("__weakref__", "_closer", "_fd", "_lock", "chars", "nbytes")

    def __init__(self) -> None:
        # unlinked as it is made (O_TMPFILE on Linux): a crash leaves nothing on disk
        file = tempfile.TemporaryFile(prefix="mailer-text-")  # noqa: SIM115 - kept open
        self._fd = file.fileno()
        self._closer = weakref.finalize(self, file.close)
        self._lock = threading.Lock()
        #: characters and UTF-8 bytes written
        self.chars = 0
        self.nbytes = 0

    def __len__(self) -> int:
        """The text's length in characters, as ``len()`` of the ``str`` would be."""
        return self.chars

    def __repr__(self) -> str:
        return f"<SpooledText: {self.chars} characters>"

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled (a Celery or RQ result carrying an error that holds the message) as
        # its text, spooled again where it is unpickled: a file cannot travel
        return (_spooled, (self.read(),))

    def append(self, data: bytes) -> None:
        """Add ``data``, UTF-8 of whole characters (MessageError if it is not)."""
        try:
            chars = len(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise MessageError("a stored text part is not whole UTF-8 characters") from None
        with self._lock:
            if not self._closer.alive:
                raise MessageError("a spooled text was closed while it was being written")
            self.chars += chars
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, self.nbytes)
                self.nbytes += written
                view = view[written:]

    def close(self) -> None:
        """Close the file (the disk space is freed); idempotent."""
        with self._lock:
            self._closer()

    def _read(self, at: int, size: int) -> bytes:
        if not self._closer.alive:
            raise MessageError(
                "this message's spooled text was released when its outbox attempt ended: "
                "read message.text during the attempt"
            )
        data = os.pread(self._fd, size, at)
        if not data:
            raise MessageError("a spooled text part is shorter than was written")
        return data

    def slices(self) -> Iterator[str]:
        """The text in pieces of about 64 KiB, each ending just after a newline except
        the last (a longer line is one piece: the same rule :class:`TextSource` cuts a
        ``str`` by, so encoding each piece gives exactly its share of the whole).

        An LF byte is never inside a multi-byte UTF-8 character, so each cut decodes.
        """
        at, end = 0, self.nbytes
        pending: list[bytes] = []
        while at < end:
            block = self._read(at, min(_SLICE, end - at))
            at += len(block)
            cut = block.rfind(b"\n") + 1 if at < end else len(block)
            if not cut:
                pending.append(block)  # inside a long line: read on
                continue
            pending.append(block[:cut])
            yield b"".join(pending).decode("utf-8")
            pending = [block[cut:]] if cut < len(block) else []

    def read(self) -> str:
        """The whole text as a ``str`` (what ``message.text`` gives: see the module)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        parts: list[str] = []
        at = 0
        while at < self.nbytes:
            block = self._read(at, min(_READ, self.nbytes - at))
            at += len(block)
            parts.append(decoder.decode(block, final=at >= self.nbytes))
        text = "".join(parts)
        if len(text) != self.chars:
            raise MessageError("a spooled text part changed since it was written")
        return text

    def contains(self, marker: str) -> bool:
        """Whether ``marker`` (no CR or LF in it) occurs in the text, found slice by
        slice (the tail of each slice carried over, for a marker across a cut)."""
        keep = len(marker) - 1
        tail = ""
        for piece in self.slices():
            window = tail + piece
            if marker in window:
                return True
            tail = window[-keep:] if keep else ""
        return False


def _spooled(text: str) -> SpooledText:
    spooled = SpooledText()
    spooled.append(text.encode("utf-8"))
    return spooled


def body_of(message: Message, which: str) -> str | SpooledText | None:
    """``message``'s ``text`` or ``html`` without reading a spooled one: the ``str``,
    None, or the :class:`SpooledText` (the renderer streams it from the file)."""
    value: str | None = message.__dict__[which]
    if value is SPOOLED:
        private = message.__pydantic_private__
        assert private is not None
        spooled: SpooledText = private["_spooled"][which]
        return spooled
    return value


def spool_into(message: Message, texts: dict[str, SpooledText]) -> None:
    """Make ``texts`` (by field, ``text`` or ``html``) the bodies of ``message``, a
    fresh copy nobody else holds yet (it is frozen for everyone else)."""
    if not texts:
        return
    private = message.__pydantic_private__
    assert private is not None
    private["_spooled"] = {**(private["_spooled"] or {}), **texts}
    for which in texts:
        message.__dict__[which] = SPOOLED


#: the fields a spooled body may stand in for
BODIES = ("text", "html")


def read_body(message: Message, name: str) -> str:
    """A spooled body's text, read from its file (not kept)."""
    body = body_of(message, name)
    assert isinstance(body, SpooledText)
    return body.read()


def field_values(message: Message) -> dict[str, Any]:
    """The field values ``Message.__eq__`` compares (a spooled body read), without the id."""
    values = {k: v for k, v in message.__dict__.items() if k != "message_id"}
    for name in BODIES:
        if values[name] is SPOOLED:
            values[name] = getattr(message, name)
    return values


def is_set(message: Message, key: str) -> bool:
    """Whether field ``key`` is set (truthy), without reading a spooled body (always
    set) or making a Message-ID."""
    if key in BODIES:
        return bool(message.__dict__[key])
    return bool(getattr(message, key, None))


class Body:
    """``Message.text`` and ``Message.html``: the field's value, or a spooled body read
    from its file on the first access and kept from then on, as any message holds its
    text. A data descriptor, as ``Message.message_id``'s
    (:class:`~mailer._message.message_id.MessageId`), installed by the model."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Message | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value: str | None = obj.__dict__[self.name]
        if value is not SPOOLED:
            return value
        text = obj.__dict__[self.name] = read_body(obj, self.name)
        return text

    def __set__(self, obj: Message, value: str | None) -> None:
        obj.__dict__[self.name] = value
