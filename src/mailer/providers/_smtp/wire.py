"""What goes on the wire, built by pure functions so it can be tested byte for byte.

The DATA payload is encoded here, not by aiosmtplib, for two reasons: the provider must
know exactly when the final "." has left (everything after it is *uncertain*), so it
writes the payload itself; and a later PIPELINING path writes the same bytes in one go.

SMTP smuggling works by making a server see an end-of-data the client did not mean:
``<LF>.<CR><LF>``, ``<CR>.<CR>``, ``\\r\\r\\n.``... We make every line ending CRLF
*before* dot-stuffing, so every "." at the start of any line a lenient server might
recognise is doubled, and the only ``<CRLF>.<CRLF>`` that leaves is our terminator.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from ..._errors import MessageError
from ..._message.mime import Rendering, Source, Streamed, TextSource
from ..._message.wire import crlf_only
from ..._text import QUOTE, clip

if TYPE_CHECKING:
    from ..._message import Message

__all__ = [
    "check_envelope_address",
    "command_line",
    "data_pieces",
    "declared_size",
    "encode_data",
    "mail_command",
    "message_payload",
    "payload_size",
    "rcpt_command",
]


class Stuffed:
    """A streamed text part (:class:`TextSource`) dot-stuffed as it is written.

    Its text can have lines that start with "." (base64 cannot); each of its chunks
    starts a line, so stuffing chunk by chunk is stuffing the whole. ``added``, the dots
    stuffing adds, is known before a byte is read: the source counted its "." lines.
    """

    __slots__ = ("added", "size", "source")

    def __init__(self, source: TextSource) -> None:
        self.source = source
        self.added = source.dots
        #: bytes on the wire
        self.size = source.size + source.dots

    def chunks(self) -> Iterator[bytes]:
        for chunk in self.source.chunks():
            if chunk.startswith(b".") or b"\n." in chunk:
                chunk = _LEADING_DOT.sub(b"..", chunk)
            yield chunk

    def check(self) -> None:
        """Nothing can change in a text part (see :meth:`TextSource.check`)."""


#: a piece of a DATA payload: bytes, or a large body encoded as it is sent
Piece = bytes | Streamed | Stuffed

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# C0 controls, space, DEL, C1 controls and the Unicode line separators.
_FORBIDDEN_IN_ADDRESS = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029<>]")


def encode_data(payload: bytes) -> bytes:
    """The DATA payload: CRLF-only, dot-stuffed, with the ``.<CRLF>`` terminator.

    Whole-buffer passes in C (``count``, ``find``, ``re.sub``), never a Python loop over
    lines; a payload that needs no change is copied once (to append the terminator).
    """
    return b"".join(data_pieces(payload))


def data_pieces(payload: bytes, *, checked: bool = False) -> tuple[bytes, ...]:
    """:func:`encode_data` as pieces to write in order, without copying a clean payload.

    A rendered :class:`~mailer.Message` is already CRLF-only and rarely has a line that
    starts with "."; then the pieces are the payload itself and the terminator, so a
    20 MB message is not copied at all. ``b"".join(data_pieces(p)) == encode_data(p)``.
    ``checked``: ``payload`` passed the Message's wire check, which refuses a bare CR or
    LF (:func:`mailer._message.wire.check_wire`), so its line endings are not counted
    again: three passes over the message, ~3.5 us of a 2 KB send (branch pool5).
    """
    if not payload:
        return (b".\r\n",)
    if payload.endswith(b"\r\n") and (checked or crlf_only(payload)):
        text = payload
    else:
        text = _LINE_ENDING.sub(b"\r\n", payload)
        if not text.endswith(b"\r\n"):
            text += b"\r\n"
    if text.startswith(b".") or b"\n." in text:
        text = _LEADING_DOT.sub(b"..", text)
    return (text, b".\r\n")


def rendering_pieces(rendering: Rendering) -> tuple[Piece, ...]:
    """:func:`data_pieces` for a streamed rendering, without reading its sources.

    The bytes segments are CRLF-only (the wire check saw to that) and are dot-stuffed
    here; a :class:`~mailer._message.mime.Source` needs neither (base64 lines never start with
    "."), so it is written as it is encoded, and a large text part with "." lines is
    stuffed as it is encoded (:class:`Stuffed`). Every segment but the first starts with
    the CRLF that ends a source's last line, so "." can be at a line start only after a
    newline inside a segment (or at the very start of the message).
    """
    pieces: list[Piece] = []
    for piece in rendering.pieces:
        if isinstance(piece, bytes) and (piece.startswith(b".") or b"\n." in piece):
            piece = _LEADING_DOT.sub(b"..", piece)
        elif isinstance(piece, TextSource) and piece.dots:
            pieces.append(Stuffed(piece))
            continue
        pieces.append(piece)
    return (*pieces, b".\r\n")


def payload_size(pieces: tuple[Piece, ...]) -> int:
    """Bytes on the wire: the pieces' lengths, sources by their encoded size."""
    return sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)


def declared_size(pieces: tuple[Piece, ...]) -> int:
    """The message size for ``SIZE=`` (RFC 1870 section 4): its octets with CRLF line
    endings, without the terminating "." line and without the dots dot-stuffing doubled.

    Not :func:`payload_size`: a server compares SIZE= with its limit, so counting the wire
    bytes refuses a message that fits (found against Nodemailer's smtp-server, which
    checks ``SIZE > limit`` exactly). ``pieces`` are :func:`data_pieces` /
    :func:`rendering_pieces` output: stuffed, the terminator last. After stuffing, every
    line that starts with "." carries exactly one added dot, so the added dots are the
    line starts with a "."; a source (base64) never holds one, a stuffed text part counted
    its own, and neither ends a line.
    """
    size, line_start = 0, True
    for piece in pieces[:-1]:
        if isinstance(piece, bytes):
            stuffed = piece.count(b"\n.") + (line_start and piece.startswith(b"."))
            size += len(piece) - stuffed
            line_start = piece.endswith(b"\n")
        else:
            size += piece.size - (piece.added if isinstance(piece, Stuffed) else 0)
            line_start = False
    return size


class _Renders(Protocol):
    """A :class:`~mailer.Message`: its ``render()`` bytes have passed the wire check
    (CRLF line endings only), which :func:`message_payload` relies on."""

    def render(self) -> bytes | Rendering: ...


class _Ref(weakref.ref):  # type: ignore[type-arg]
    """A weak reference that knows its cache key: one shared callback, not a closure
    (and its defaults tuple) per message, which the collector would walk while sends
    queue."""

    __slots__ = ("key",)
    key: int


_PAYLOADS: dict[int, tuple[_Ref, tuple[Piece, ...]]] = {}
_PAYLOADS_LOCK = threading.Lock()


def _forget(ref: _Ref) -> None:
    with _PAYLOADS_LOCK:
        entry = _PAYLOADS.get(ref.key)
        if entry is not None and entry[0] is ref:
            del _PAYLOADS[ref.key]


def message_payload(message: _Renders) -> tuple[Piece, ...]:
    """The DATA payload pieces of ``message``, encoded once per message, not per attempt.

    A streamed rendering's sources are encoded on each attempt as they are written
    (:meth:`.pipeline.ReplyStream.send_payload`), from the same fixed rendering. Kept
    while the message object lives (keyed by identity, dropped by a weak reference
    callback), so a retry or a failover to another SMTP provider reuses it.
    """
    key = id(message)
    entry = _PAYLOADS.get(key)
    if entry is not None and entry[0]() is message:
        pieces = entry[1]
        if len(pieces) > 2:  # a streamed rendering: a file that changed fails here
            for piece in pieces:
                if isinstance(piece, Source):
                    piece.check()
        return pieces
    rendered = message.render()  # through the wire check: CRLF only
    pieces = (
        data_pieces(rendered, checked=True)
        if isinstance(rendered, bytes)
        else rendering_pieces(rendered)
    )

    try:
        ref = _Ref(message, _forget)
    except TypeError:  # not weak-referenceable: encode every time
        return pieces
    ref.key = key
    with _PAYLOADS_LOCK:
        _PAYLOADS[key] = (ref, pieces)
    return pieces


def payload_8bit(message: Message) -> tuple[Piece, ...] | None:
    """The DATA pieces of :meth:`Message.render_8bit`, or None when the message has no
    8-bit rendering. Not cached here: the rendering is, and the message is rare."""
    rendered = message.render_8bit()  # through the wire check, as render()'s
    if rendered is None:
        return None
    if isinstance(rendered, bytes):
        return data_pieces(rendered, checked=True)
    return rendering_pieces(rendered)


def check_envelope_address(address: str, what: str, *, utf8: bool = False) -> str:
    """Refuse an address that could break out of ``MAIL FROM:<...>`` / ``RCPT TO:<...>``.

    Message already validates addresses; this is the last check at the point where an
    address becomes a command, because a provider may be handed addresses by other code.
    Non-ASCII is allowed only with ``utf8`` (a transaction with SMTPUTF8, RFC 6531).
    """
    if not address or _FORBIDDEN_IN_ADDRESS.search(address) or not (utf8 or address.isascii()):
        shown = repr(clip(address, QUOTE))
        raise MessageError(
            f"{what} cannot go into an SMTP command (empty, non-ASCII without SMTPUTF8, "
            f"space, angle bracket or control character): {shown}"
        )
    return address


def mail_command(
    sender: str, *, size: int | None = None, smtputf8: bool = False, body_8bit: bool = False
) -> tuple[bytes, ...]:
    """``MAIL FROM:<sender> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]`` as the argument tuple
    aiosmtplib sends (``body_8bit``: the payload has 8-bit data, RFC 6152)."""
    check_envelope_address(sender, "envelope sender", utf8=smtputf8)
    args: tuple[bytes, ...] = (b"MAIL", b"FROM:<" + sender.encode("utf-8") + b">")
    if size is not None:
        args += (b"SIZE=%d" % size,)
    if body_8bit:
        args += (b"BODY=8BITMIME",)
    if smtputf8:
        args += (b"SMTPUTF8",)
    return args


def rcpt_command(recipient: str, *, smtputf8: bool = False) -> tuple[bytes, ...]:
    """``RCPT TO:<recipient>`` as the argument tuple aiosmtplib sends."""
    check_envelope_address(recipient, "envelope recipient", utf8=smtputf8)
    return (b"RCPT", b"TO:<" + recipient.encode("utf-8") + b">")


def command_line(args: tuple[bytes, ...]) -> bytes:
    """One command as written to the socket (for pipelining, which writes several)."""
    return b" ".join(args) + b"\r\n"
