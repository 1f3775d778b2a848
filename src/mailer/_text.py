"""How long a piece of error text may be: one rule, three lengths.

Error text quotes what others sent (a header line, a server's reply, a proxy's status line,
an exception of a dependency), and what others send can be any length: a server that
answers with a page of HTML must not produce a page-long exception, log record or CLI
line. Every cut of ours goes through :func:`clip`, so a cut text always says it was cut
("...") and is never longer than its limit, and the limits are named for what they bound.
"""

from __future__ import annotations

from typing import overload

__all__ = ["LINE", "QUOTE", "REASON", "clip"]

#: a piece of someone else's input quoted inside one of our messages (a line, an address,
#: a status line): enough to recognise it
QUOTE = 80
#: someone else's reason inside one of our messages (a reply's text, an exception's)
REASON = 200
#: a whole error on one line (what the CLI prints, what a row of a listing shows)
LINE = 400


@overload
def clip(text: str, limit: int) -> str: ...
@overload
def clip(text: bytes, limit: int) -> bytes: ...
def clip(text: str | bytes, limit: int) -> str | bytes:
    """``text`` if it fits in ``limit`` characters (or bytes), else its start and "...",
    ``limit`` long in all."""
    if len(text) <= limit:
        return text
    keep = max(limit - 3, 0)
    return text[:keep] + b"..." if isinstance(text, bytes) else text[:keep] + "..."
