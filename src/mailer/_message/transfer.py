"""Which transfer encoding a text part goes as: one rule for the whole-part renderer
(:mod:`.mime`) and the streamed one (:mod:`.stream`), so both write the same bytes.

A text (newlines already LF, a final one added) goes as 7bit when every character is
printable ASCII, a tab or LF, and no line has 999 characters or more (RFC 5322's 998
plus CRLF); otherwise as base64 when more than a third of its UTF-8 bytes are not
ASCII, else quoted-printable. The streamed renderer applies the 7bit rule slice by slice:
its slices each start a line and keep a long line whole, so a slice's verdict is its
share of the whole text's.

Both checks are C passes (``bytes.translate``, ``str.find``), not regexes: the regexes
they replaced walked every character in the regex engine, ~15 us per 2 KB body and most
of a 50 MiB text's scan (docs/benchmarks.md, "The 7bit rule in one place").
"""

from __future__ import annotations

__all__ = ["as_7bit", "long_line", "mostly_non_ascii"]

#: the bytes a 7bit text may hold: ``bytes.translate`` deleting them leaves nothing
#: exactly when the text is 7bit-clean (one C pass)
_TEXT_7BIT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"


def as_7bit(data: str) -> bytes | None:
    """``data`` (LF line ends) as ASCII bytes when it may go as 7bit, else None."""
    if not data.isascii():  # O(1) on a str
        return None
    raw = data.encode("ascii")
    if raw.translate(None, _TEXT_7BIT_BYTES) or long_line(data):
        return None
    return raw


def long_line(data: str) -> bool:
    """Whether ``data`` (LF line ends) has a line of 999 characters or more.

    As in the wire check (``wire._has_overlong_line``): every run of 999 characters
    holds exactly one offset that is a multiple of 999, so only the lines through those
    offsets are measured, by ``find`` in C; linear, and nothing copied.
    """
    size = len(data)
    for offset in range(0, size, 999):
        if data[offset] == "\n":
            continue
        start = data.rfind("\n", 0, offset) + 1
        end = data.find("\n", offset)
        if (size if end < 0 else end) - start >= 999:
            return True
    return False


def mostly_non_ascii(utf8: int, ascii_: int) -> bool:
    """Whether a text of ``utf8`` UTF-8 bytes, ``ascii_`` of them ASCII, goes as base64
    (more than a third not ASCII) rather than quoted-printable."""
    return (utf8 - ascii_) * 3 > utf8
