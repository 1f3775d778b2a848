"""Fast MIME rendering for the shapes nearly every message has. Pure functions, no I/O.

Why not only the stdlib: ``email.message.EmailMessage`` spends about 0.8 ms per small
message in its header registry and generator, which was most of a send's CPU time, and
it holds several copies of a large attachment while encoding it. This module writes the
same structures directly:

* headers: ASCII text folded at spaces; anything non-ASCII (or anything that looks like
  an encoded-word) as RFC 2047 base64 encoded-words; address lists folded after commas;
  an internationalized address (non-ASCII local part) as UTF-8, as RFC 6532 requires
  (it cannot be encoded; such a message needs SMTPUTF8);
* bodies: 7bit when the text is plain ASCII with short lines, else quoted-printable (or
  base64 when most of it is not ASCII);
* multipart/alternative, /related (inline parts) and /mixed (attachments), base64
  attachments encoded in chunks straight into one buffer.

Large bodies are not encoded here at all: attachments of at least
:data:`STREAM_THRESHOLD` bytes (by path or in memory) and text or HTML parts of at least
as many characters. The rendering keeps a streamed piece in their place
(:mod:`mailer._message.stream`: a :class:`Source`, a :class:`TextSource`), which encodes
the body chunk by chunk when the message is sent (so a 50 MiB body is never held encoded
whole, and no single step holds the event loop for long), and :class:`Rendering` is the
message as such a sequence of checked bytes and streamed pieces. Everything that is fixed
per message (Date, Message-ID, boundaries, transfer encodings) is fixed once, when the
rendering is made, so every attempt sends the same bytes; a file that changed since is
refused.

It returns None for anything it does not handle (an unbreakable header line, say), and
the caller falls back to the stdlib. Its output is checked by the same wire check as the
stdlib's, and tests compare the two renderers' parsed results on generated messages.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from .._errors import MessageError
from .address import Address as _Address
from .spooled import SpooledText, body_of
from .stream import STREAM_THRESHOLD, Rendering, Source, Streamed, TextSource, stat_path
from .transfer import as_7bit, mostly_non_ascii

if TYPE_CHECKING:
    from . import Address, Attachment, Message

__all__ = [
    "STREAM_THRESHOLD",
    "Rendering",
    "Source",
    "Streamed",
    "TextSource",
    "encode_header_value",
    "has_8bit_message",
    "header",
    "render",
    "rfc822_body",
]

CRLF = b"\r\n"
_MAX_LINE = 78  # RFC 5322 SHOULD; the hard limit (998) is enforced by the wire check
_ATOM_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")
_LONG_LINE = re.compile(r"(?m)^[^\n]{999}")  # anchored at line starts: linear
_LONG_LINE_BYTES = re.compile(rb"(?m)^[^\n]{999}")
_EW_PAYLOAD = 42  # UTF-8 bytes per encoded-word: 56 base64 chars + 12 = 68 columns
_B64_CHUNK = 57 * 1024  # input bytes per base64 chunk (57 bytes make one 76-char line)
_rng = random.Random()


class _Unsupported(Exception):
    """Raised inside the renderer for a case it leaves to the stdlib."""


# ------------------------------------------------------------------------------ headers


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words, each at most 42 UTF-8 bytes (never splitting a char).

    A split goes just after a space of the text where there is one: RFC 2047 decoders
    drop the whitespace between adjacent encoded-words, but Python's address parser
    keeps it, and a split after a space reads right either way.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > _EW_PAYLOAD and chunk:
            cut = len(chunk)
            for i in range(len(chunk) - 1, 0, -1):
                if chunk[i - 1].isspace():
                    cut = i
                    break
            words.append("".join(chunk[:cut]))
            chunk = chunk[cut:]
            size = len("".join(chunk).encode("utf-8"))
        chunk.append(ch)
        size += n
    if chunk:
        words.append("".join(chunk))
    return [
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    ]


def encode_header_value(value: str) -> str:
    """``value`` as RFC 2047 encoded-words when it is not ASCII, else unchanged.

    For APIs that pass custom headers through to the MIME message (SendGrid, Postmark,
    ...): a raw non-ASCII header is invalid on the wire, and some APIs refuse it.
    """
    return value if value.isascii() else " ".join(_encoded_words(value))


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or not _PRINTABLE.fullmatch(text)


def _fold(name: str, atoms: Sequence[str]) -> bytes:
    """``Name: atom atom ...`` folded before atoms so lines stay near 78 columns.

    Atoms are joined by single spaces; a fold replaces that space by CRLF + space, so
    unfolding gives back the exact value. Never folds before an empty atom (that would
    leave a line of only whitespace).
    """
    line = name + ":"
    if atoms:
        whole = line + " " + " ".join(atoms)
        if len(whole) <= _MAX_LINE:
            # the common case (a short subject, one or two recipients): the loop below
            # would not fold, and 78 characters are at most 312 octets, far under 998
            return (whole + "\r\n").encode("utf-8")
    lines: list[str] = []
    for i, atom in enumerate(atoms):
        if i and atom and len(line) + 1 + len(atom) > _MAX_LINE and line.strip():
            lines.append(line)
            line = " " + atom
        else:
            line += " " + atom
    lines.append(line)
    # UTF-8, not ASCII: only an internationalized address (RFC 6532) can be non-ASCII
    # here (everything else became encoded-words); the limit is 998 octets
    data = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if any(len(x) > 998 for x in data.split(b"\r\n")):
        raise _Unsupported("header line too long to fold")
    return data


def _unstructured(name: str, value: str) -> bytes:
    value = value.strip()
    if _needs_encoding(value):
        return _fold(name, _encoded_words(value))
    if "  " in value and len(name) + len(value) + 2 > _MAX_LINE:
        raise _Unsupported("long header with runs of spaces")
    return _fold(name, value.split(" "))


def _mailbox_atoms(address: Address) -> list[str]:
    if not address.name:
        return [address.email]
    name = address.name
    if _needs_encoding(name):
        phrase = _encoded_words(name)
    elif _ATOM_NAME.fullmatch(name) and "  " not in name and name == name.strip():
        phrase = name.split(" ")
    else:
        phrase = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return [*phrase, f"<{address.email}>"]


def _addresses(name: str, addresses: Sequence[Address]) -> bytes:
    atoms: list[str] = []
    for i, address in enumerate(addresses):
        mailbox = _mailbox_atoms(address)
        if i < len(addresses) - 1:
            mailbox[-1] += ","
        atoms.extend(mailbox)
    return _fold(name, atoms)


#: the From header as rendered, by (display name, address): every message of a Mailer
#: has the same sender, and folding it cost a few microseconds a send. Bounded: a
#: process sending as many senders starts over when it is full.
_FROM_CACHE: dict[tuple[str | None, str], bytes] = {}
_FROM_CACHE_SIZE = 256


def _from_header(address: Address) -> bytes:
    key = (address.name, address.email)
    data = _FROM_CACHE.get(key)
    if data is None:
        data = _addresses("From", [address])
        if len(_FROM_CACHE) >= _FROM_CACHE_SIZE:
            _FROM_CACHE.clear()
        _FROM_CACHE[key] = data
    return data


def _param(key: str, value: str) -> str:
    """A MIME parameter: quoted when ASCII, RFC 2231 ``key*=utf-8''...`` otherwise."""
    if value.isascii() and _PRINTABLE.fullmatch(value) and '"' not in value and "\\" not in value:
        return f'{key}="{value}"'
    return f"{key}*=utf-8''{quote(value.encode('utf-8'), safe='')}"


# -------------------------------------------------------------------------------- parts


class _Base64:
    """An attachment's body, encoded only when it is written (so never held twice)."""

    __slots__ = ("attachment",)

    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment

    def write(self, out: io.BytesIO) -> None:
        """Base64 in 76-column CRLF lines, chunk by chunk, without the final CRLF."""
        data = self.attachment.data()
        view = memoryview(data)
        last = max(len(view) - 1, 0) // _B64_CHUNK * _B64_CHUNK
        for i in range(0, len(view), _B64_CHUNK):
            chunk = base64.encodebytes(view[i : i + _B64_CHUNK]).replace(b"\n", CRLF)
            out.write(chunk[:-2] if i == last else chunk)


# A part is (header bytes, list of body pieces). Bodies end without their final CRLF;
# the multipart writer puts CRLF before every boundary, as the stdlib does.
_Piece = bytes | _Base64 | Streamed
_Part = tuple[bytes, list[_Piece]]


def _text_part(text: str | SpooledText, subtype: str, scanned: Sequence[TextSource] = ()) -> _Part:
    if not isinstance(text, str) or len(text) >= STREAM_THRESHOLD:  # encoded as sent
        found = [s for s in scanned if s.is_of(text)]
        source = found[0] if found else TextSource(text)
        return _text_head(subtype, source.cte), [source]
    data = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    # The 7bit rule before the final newline is added: a newline is neither a control
    # character it refuses nor part of a line, so the verdict is the same, and a 7bit
    # body (nearly every text) is then not copied to add it and again to take it off.
    ascii_ = as_7bit(data)
    if ascii_ is not None:
        body = ascii_.replace(b"\n", CRLF)
        return _text_head(subtype, "7bit"), [body[:-2] if data.endswith("\n") else body]
    if not data.endswith("\n"):
        data += "\n"
    raw = data.encode("utf-8")
    if mostly_non_ascii(len(raw), len(data.encode("ascii", "ignore"))):
        cte, body = "base64", base64.encodebytes(raw).replace(b"\n", CRLF)
    else:
        qp = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
        cte, body = "quoted-printable", qp.replace(b"\n", CRLF)
    return _text_head(subtype, cte), [body[:-2]]


#: a text part's header lines, by (subtype, transfer encoding): a few, made once each
_TEXT_HEADS: dict[tuple[str, str], bytes] = {}


def _text_head(subtype: str, cte: str) -> bytes:
    head = _TEXT_HEADS.get((subtype, cte))
    if head is None:
        head = _TEXT_HEADS[subtype, cte] = (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
        ).encode("ascii")
    return head


def _attachment_part(att: Attachment, eight_bit: bool = False) -> _Part:
    assert att.filename is not None
    disposition = "inline" if att.inline else "attachment"
    body: _Piece = _Base64(att)
    cte = "base64"
    if att.content_type != "message/rfc822" and _raw_size(att) >= STREAM_THRESHOLD:
        body = Source(att)
    if att.content_type == "message/rfc822":
        # RFC 2046 5.2.1: a message/rfc822 part must not be base64 (readers show the
        # base64 text instead of the message), so it goes as it is: 7bit, or 8bit in
        # the rendering for a server that takes it (see Message.render_8bit)
        data = att.data()
        raw = _rfc822_8bit(data) if eight_bit else None
        body, cte = (raw, "8bit") if raw is not None else (rfc822_body(data), "7bit")
    lines = [
        f"Content-Type: {att.mime_type()}",
        f"Content-Transfer-Encoding: {cte}",
        f"Content-Disposition: {disposition}; {_param('filename', att.filename)}",
    ]
    if att.content_id:
        lines.append(f"Content-ID: <{att.content_id}>")
    if any(len(x) > 998 for x in lines):
        raise _Unsupported("attachment header too long")
    head = ("\r\n".join(lines) + "\r\n").encode("ascii")
    return head, [body]


def _raw_size(att: Attachment) -> int:
    if att.content is not None:
        return len(att.content)
    assert att.path is not None
    return stat_path(att.path).st_size


def rfc822_body(data: bytes) -> bytes:
    """An attached message as 7bit lines with CRLF, re-encoded to 7 bits when it has 8.

    RFC 2046 5.2.1 allows only 7bit, 8bit or binary for a message/rfc822 part, and 8bit
    needs 8BITMIME on every hop; so an 8-bit attached message (Django attaches them,
    #36119) is re-encoded inside: its 8-bit text parts as base64 with their charset, its
    UTF-8 header values as RFC 2047 encoded-words. MessageError when even that cannot
    make it 7-bit (an 8-bit part that names no charset, a NUL, an over-long line).
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text.isascii():
        text = _seven_bit(text)
    if not text.isascii() or _LONG_LINE.search(text.decode("ascii")) or b"\x00" in text:
        raise MessageError(
            "an attached message (message/rfc822) must be 7-bit ASCII with lines of at most "
            "998 characters, or 8-bit text parts that name their charset; attach it as "
            "application/octet-stream instead"
        )
    return text.rstrip(b"\n").replace(b"\n", CRLF)


def _rfc822_8bit(data: bytes) -> bytes | None:
    """An 8-bit attached message as it is (CRLF lines), or None when it is 7-bit anyway
    or cannot go as 8bit either (a NUL, a line over 998 octets)."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text.isascii() or b"\x00" in text or _LONG_LINE_BYTES.search(text):
        return None
    return text.rstrip(b"\n").replace(b"\n", CRLF)


def has_8bit_message(message: Message) -> bool:
    """Whether an attached message (message/rfc822) has 8-bit content."""
    if not message.attachments:  # every send asks (SMTP's payload_8bit): no generator
        return False
    return any(
        a.content_type == "message/rfc822" and not a.data().isascii() for a in message.attachments
    )


def _seven_bit(text: bytes) -> bytes:
    """``text`` (an 8-bit message, LF line ends) re-encoded by the stdlib's generator
    with a 7-bit policy; header values that are UTF-8 are re-set as text first, so they
    are encoded as utf-8 words (the generator alone labels raw bytes unknown-8bit)."""
    import email
    import email.policy
    from email.generator import BytesGenerator

    policy = email.policy.SMTP.clone(cte_type="7bit", linesep="\n")
    inner = email.message_from_bytes(text, policy=policy)
    for part in inner.walk():
        items = list(part.raw_items())
        if all(value.isascii() for _, value in items):
            continue
        for name in {name for name, _ in items}:
            del part[name]
        for name, value in items:
            raw = value.encode("ascii", "surrogateescape")
            try:
                part[name] = raw.decode("utf-8") if not raw.isascii() else value
            except (UnicodeDecodeError, ValueError, TypeError):
                part[name] = value  # left 8-bit: refused by the caller
    out = io.BytesIO()
    try:
        BytesGenerator(out, policy=policy).flatten(inner)
    except (ValueError, TypeError, UnicodeError, LookupError):
        return text  # not ASCII: refused by the caller
    return out.getvalue()


def _boundary(parts: Sequence[_Part]) -> str:
    while True:
        boundary = f"==============={_rng.getrandbits(63):019d}=="
        marker = boundary.encode("ascii")
        # base64 bodies cannot hold it ("=" is only padding there); check the others
        texts = (p for _, body in parts for p in body if isinstance(p, bytes))
        large = (p for _, body in parts for p in body if isinstance(p, TextSource))
        if not any(marker in piece for piece in texts) and not any(
            p.contains(boundary) for p in large
        ):
            return boundary


def _multipart(subtype: str, parts: list[_Part]) -> _Part:
    boundary = _boundary(parts)
    delimiter = f"--{boundary}".encode("ascii")
    body: list[_Piece] = []
    for head, pieces in parts:
        body += [delimiter, CRLF, head, CRLF, *pieces, CRLF]
    body += [delimiter, b"--"]
    head = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n'.encode("ascii")
    return head, body


def _body(message: Message, eight_bit: bool = False, scanned: Sequence[TextSource] = ()) -> _Part:
    # a spooled body (a loaded outbox row's) streams from its file, never read whole
    text, html = body_of(message, "text"), body_of(message, "html")
    inline = [a for a in message.attachments if a.inline]
    files = [a for a in message.attachments if not a.inline]
    if text is None and html is None and not files:
        text = ""
    html_part: _Part | None = None
    if html is not None:
        html_part = _text_part(html, "html", scanned)
        if inline:
            related = [_attachment_part(a, eight_bit) for a in inline]
            html_part = _multipart("related", [html_part, *related])
    plain = None if text is None else _text_part(text, "plain", scanned)
    parts = [p for p in (plain, html_part) if p]
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts) if parts else None
    if files:
        attached = [_attachment_part(a, eight_bit) for a in files]
        body = _multipart("mixed", [*([body] if body else []), *attached])
    assert body is not None
    return body


# ------------------------------------------------------------------------------ message


def header(headers: dict[str, str], lower: str) -> str | None:
    """The value of the custom header named ``lower`` (any case), or None."""
    for name, value in headers.items():
        if name.lower() == lower:
            return value.strip()
    return None


def render(
    message: Message, date: str, *, eight_bit: bool = False, scanned: Sequence[TextSource] = ()
) -> tuple[list[bytes | Streamed], list[str]] | None:
    """The message and the header names written, or None to use the stdlib.

    The message is one bytes segment, or with large bodies, bytes segments with a
    streamed piece (:class:`Source`, :class:`TextSource`) between each two (the first
    segment holds the whole header block).
    ``eight_bit``: attached messages with 8-bit content go as they are (8bit), for a
    server that offers 8BITMIME; otherwise they are re-encoded to 7 bits. ``scanned``:
    large text parts' sources made beforehand (:meth:`TextSource.made`), used for the
    very strings they were made of.
    """
    sender, message_id = message.sender, message.message_id
    assert sender is not None and message_id is not None
    try:
        names = ["from"]
        out: list[bytes] = [_from_header(sender)]
        to, cc, reply_to = message.to, message.cc, message.reply_to
        if to:
            out.append(_addresses("To", to))
            names.append("to")
        if cc:
            out.append(_addresses("Cc", cc))
            names.append("cc")
        if reply_to:
            out.append(_addresses("Reply-To", reply_to))
            names.append("reply-to")
        out.append(_unstructured("Subject", message.subject))
        out.append(f"Date: {date}\r\nMessage-ID: {message_id}\r\n".encode("ascii"))
        names += ["subject", "date", "message-id"]
        for name, value in message.headers.items():
            lower = name.lower()
            if lower == "date":
                continue  # the caller's Date is ``date``, written above
            if lower == "sender":
                out.append(_addresses(name, [_Address.parse(value)]))
            else:
                out.append(_unstructured(name, value))
            names.append(lower)
        head, pieces = _body(message, eight_bit, scanned)
        out += (b"MIME-Version: 1.0\r\n", head, CRLF)
        if all(type(piece) is bytes for piece in pieces):
            # nearly every message: its parts are bytes already, joined in one copy
            out += pieces  # type: ignore[arg-type]
            out.append(CRLF)
            return [b"".join(out)], names
        return _segments(out, pieces), names
    except _Unsupported:
        return None


def _segments(head: list[bytes], pieces: list[_Piece]) -> list[bytes | Streamed]:
    """The rendering's segments: ``head``'s bytes, then ``pieces``, the streamed ones
    between bytes segments, the base64 ones encoded into the buffer."""
    out = io.BytesIO()
    for data in head:
        out.write(data)
    segments: list[bytes | Streamed] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            out.write(piece)
        elif isinstance(piece, Source | TextSource):
            segments += [out.getvalue(), piece]
            out = io.BytesIO()
        else:
            piece.write(out)
    out.write(CRLF)
    # getvalue() hands over BytesIO's own buffer without a copy (CPython), so a large
    # attachment is held once encoded, not twice.
    segments.append(out.getvalue())
    return segments
