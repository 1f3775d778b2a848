"""The last check on rendered bytes, before any of them is sent.

Input validation should make it redundant; it is there because CVE-2024-6923 showed that
the stdlib can turn a validated value into an extra header line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._errors import MessageError
from .._text import QUOTE, clip

_OVERLONG_LINE = re.compile(rb"(?m)^[^\r\n]{999}")  # anchored: linear, not quadratic
_LINE_START = re.compile(rb"(?m)^(?:([!-9;-~]+):|[ \t])")


def check_wire(data: bytes, expected_headers: Iterable[str], *, head: bool = True) -> None:
    """Last check on rendered bytes: CRLF only, no NUL, no long line, only our headers.

    ``head=False`` for a later segment of a streamed rendering (no header block in it).
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        raise MessageError("rendered message has a bare CR or LF (refusing to send it)")
    if b"\x00" in data:
        raise MessageError("rendered message contains NUL")
    if head:
        _check_head(data, expected_headers)
    if _OVERLONG_LINE.search(data):
        raise MessageError("rendered message has a line longer than 998 octets")


def _check_head(data: bytes, expected_headers: Iterable[str]) -> None:
    end = data.find(b"\r\n\r\n")  # no partition(): that would copy a large body
    if end < 0:
        raise MessageError("rendered message has no header/body separator")
    head = data[:end]
    allowed = {h.lower() for h in expected_headers}
    allowed |= {"mime-version", "content-type", "content-transfer-encoding"}
    seen: dict[str, int] = {}
    for line in head.split(b"\r\n"):
        if len(line) > 998:
            raise MessageError("rendered header line longer than 998 octets")
        m = _LINE_START.match(line)
        if m is None:
            raise MessageError(f"rendered header has an unexpected line: {clip(line, QUOTE)!r}")
        if m.group(1) is not None:
            name = m.group(1).decode("ascii").lower()
            if name not in allowed:
                raise MessageError(f"rendered message has an unexpected header {name!r}")
            seen[name] = seen.get(name, 0) + 1
    for name in ("from", "subject", "date", "message-id", "to", "cc", "reply-to"):
        if seen.get(name, 0) > 1:
            raise MessageError(f"rendered message has {name!r} more than once")
