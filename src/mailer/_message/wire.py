"""The last check on rendered bytes, before any of them is sent.

Input validation should make it redundant; it is there because CVE-2024-6923 showed that
the stdlib can turn a validated value into an extra header line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._errors import MessageError
from .._text import QUOTE, clip

#: a header block's line that is neither a field (``Name:``) nor a continuation
_BAD_LINE = re.compile(rb"(?m)^(?![!-9;-~]+:|[ \t])")
#: the name of each field of a header block
_FIELD_NAME = re.compile(rb"(?m)^([!-9;-~]+):")
#: the start of each line of a header block with CRLF in front: ``name:``, a space or
#: tab (a continuation), or empty for a line that is neither
_LINE_START = re.compile(rb"\r\n([!-9;-~]+:|[ \t]|)")
#: the longest line RFC 5322 section 2.1.1 allows, without its CRLF
_MAX_LINE = 998
#: headers the renderer may add to any message, besides the ones it names
_STRUCTURAL = frozenset({b"mime-version", b"content-type", b"content-transfer-encoding"})
#: headers that may appear at most once (RFC 5322 section 3.6)
_ONCE = (b"from", b"subject", b"date", b"message-id", b"to", b"cc", b"reply-to")
_ONCE_COLON = tuple(name + b":" for name in _ONCE)


def check_wire(data: bytes, expected_headers: Iterable[str], *, head: bool = True) -> None:
    """Last check on rendered bytes: CRLF only, no NUL, no long line, only our headers.

    ``head=False`` for a later segment of a streamed rendering (no header block in it).
    """
    check_line_endings(data)
    if head:
        _check_head(data, expected_headers)
    if len(data) > _MAX_LINE and _has_overlong_line(data):
        raise MessageError("rendered message has a line longer than 998 octets")


def crlf_only(data: bytes) -> bool:
    """Every CR and every LF of ``data`` is part of a CRLF (three passes in C)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") == pairs and data.count(b"\n") == pairs


def check_line_endings(data: bytes, what: str = "rendered message") -> None:
    """CRLF only and no NUL: what lets SMTP send the bytes as they are (no line endings
    rewritten, ``.`` stuffed after CRLF only), so no bare-LF end-of-data sequence can
    smuggle a second message to a server. Also run on a rendering read back from the
    outbox, which skipped :func:`check_wire` when it was stored and may have been
    edited since."""
    if not crlf_only(data):
        raise MessageError(f"{what} has a bare CR or LF (refusing to send it)")
    if b"\x00" in data:
        raise MessageError(f"{what} contains NUL")


def _has_overlong_line(data: bytes) -> bool:
    """Whether a line of ``data`` (CRLF-only, checked by the caller) is over 998 octets.

    Every run of 999 bytes holds exactly one offset that is a multiple of 999, so only
    the lines through those offsets need measuring: a few ``find`` calls in C for a
    message of a few KB (a regex over every line start cost more than the rest of the
    check on the send path), and still linear for a large one.
    """
    size = len(data)
    for offset in range(0, size, _MAX_LINE + 1):
        if data[offset] in b"\r\n":
            continue
        start = data.rfind(b"\n", 0, offset) + 1
        end = data.find(b"\r", offset)
        if (size if end < 0 else end) - start > _MAX_LINE:
            return True
    return False


def _check_head(data: bytes, expected_headers: Iterable[str]) -> None:
    """Every header line a field or a continuation, only expected names, the
    once-only ones once.

    One regex pass tells each line's start (``_LINE_START``: ``name:``, a space or tab,
    or nothing for a line that is neither); when every start is an allowed one and no
    once-only name repeats, the head is good. Otherwise :func:`_head_error` looks again,
    slowly, to say what is wrong. The pass is anchored on the literal CRLF, which the
    regex engine finds in C, where the ``(?m)^`` patterns it replaced tried every
    position (two of them: ~3.3 us of a small message's ~4.7 us check, branch pool5).
    """
    end = data.find(b"\r\n\r\n")  # no partition(): that would copy a large body
    if end < 0:
        raise MessageError("rendered message has no header/body separator")
    head = data[:end]
    if len(head) > _MAX_LINE and _has_overlong_line(head):
        raise MessageError("rendered header line longer than 998 octets")
    # lowered: the names' case is not compared (the character classes hold either case)
    starts = _LINE_START.findall(b"\r\n" + head.lower())
    distinct = set(starts)
    if distinct <= _allowed(expected_headers)[1] and (
        len(distinct) == len(starts) or not any(starts.count(n) > 1 for n in _ONCE_COLON)
    ):
        return
    _head_error(head, expected_headers)
    raise AssertionError("unreachable: the head was refused above")  # pragma: no cover


def _head_error(head: bytes, expected_headers: Iterable[str]) -> None:
    """Raise the MessageError that says what is wrong with ``head``, line by line in
    the order of the header block (only after :func:`_check_head` refused it)."""
    bad = _BAD_LINE.search(head)
    if bad is not None:
        stop = head.find(b"\r\n", bad.start())
        line = head[bad.start() : stop if stop >= 0 else len(head)]
        raise MessageError(f"rendered header has an unexpected line: {clip(line, QUOTE)!r}")
    found = _FIELD_NAME.findall(head.lower())
    allowed = _allowed(expected_headers)[0]
    for raw in found:  # the first one, in the order of the header block
        if raw not in allowed:
            name = raw.decode("ascii")
            raise MessageError(f"rendered message has an unexpected header {name!r}")
    for once in _ONCE:
        if found.count(once) > 1:
            name = once.decode("ascii")
            raise MessageError(f"rendered message has {name!r} more than once")


#: for each tuple of expected header names seen: the allowed names (lowercase bytes),
#: and the allowed line starts of ``_LINE_START`` (each name with its colon, a space, a tab)
_ALLOWED: dict[tuple[str, ...], tuple[frozenset[bytes], frozenset[bytes]]] = {}


def _allowed(expected_headers: Iterable[str]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """The names a header block may hold (the structural ones and ``expected_headers``,
    lowercased, as bytes), and the line starts it may hold. Kept per tuple of names
    (messages of one application use a few), up to a bound that a stream of ever-new
    custom names cannot pass."""
    key = tuple(expected_headers)
    allowed = _ALLOWED.get(key)
    if allowed is None:
        names = _STRUCTURAL | {h.lower().encode("ascii", "replace") for h in key}
        allowed = (names, frozenset({b" ", b"\t", *(name + b":" for name in names)}))
        if len(_ALLOWED) >= 256:
            _ALLOWED.clear()
        _ALLOWED[key] = allowed
    return allowed
