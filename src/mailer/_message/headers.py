"""Which custom headers a message may carry, and what the checked ones must hold.

The Message owns the headers it has fields for; trace and authentication headers belong
to the servers on the path; Sender and Date are the caller's, checked for what they
hold. Everything else is free text, checked for control characters and length.
"""

from __future__ import annotations

import re
from email.utils import parsedate_tz

from .._errors import MessageError
from ._checks import HEADER_NAME, MAX_HEADERS, check_length, check_text, describe
from .address import Address

__all__ = ["check_headers"]

# Headers the Message owns: set through its fields, never through ``headers``.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)
# Headers that ``headers`` may set, checked for what they hold (see _checked_header):
# Sender (bounce handling, on behalf of) and Date (imports of old mail, a fixed date).
_CHECKED_HEADERS = frozenset({"sender", "date"})

# Trace and authentication headers are written by the servers a message passes through
# (RFC 5321 4.4, RFC 8601, RFC 8617) or by the signer (DKIM-Signature, from ``dkim``).
# One set by the sender is a forgery that filters and people may trust.
_TRACE_HEADERS = frozenset(
    {
        "received",
        "return-path",
        "received-spf",
        "authentication-results",
        "dkim-signature",
        "domainkey-signature",
        "delivered-to",
        "x-original-to",
    }
)
_TRACE_PREFIXES = ("arc-", "resent-")
# RFC 5322 3.3's date-time, loosely (folding and comments aside): [day ","] d mon y
# hh:mm[:ss] zone. parsedate_tz alone takes nearly anything with a number in it.
_DATE = re.compile(
    r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?\s+"
    r"(?:[+-]\d{4}|UT|GMT|[ECMP][SD]T|[A-IK-Za-ik-z])$"
)


def check_headers(value: dict[str, str]) -> dict[str, str]:
    """``Message.headers``, checked: MessageError naming the first bad header."""
    if len(value) > MAX_HEADERS:
        raise MessageError(f"{len(value)} custom headers; the limit is {MAX_HEADERS}")
    for name, text in value.items():
        if not HEADER_NAME.match(name):
            raise MessageError(f"invalid header name: {describe(name)}")
        lower = name.lower()
        if lower in _RESERVED_HEADERS:
            raise MessageError(
                f"header {name!r} is set from the message's own fields; use them instead"
            )
        if lower in _TRACE_HEADERS or lower.startswith(_TRACE_PREFIXES):
            raise MessageError(
                f"header {name!r} is a trace or authentication header, which only the "
                "servers a message passes through (or its DKIM signer: use the dkim "
                "option) may add; a sender-supplied one is a forgery"
            )
        check_text(text, f"header {name!r}", allow_tab=True)
        check_length(text, f"header {name!r}")
        if lower in _CHECKED_HEADERS:
            _checked_header(lower, name, text)
    for special in _CHECKED_HEADERS:
        if sum(name.lower() == special for name in value) > 1:
            raise MessageError(f"header {special.title()!r} is given more than once")
    return value


def _checked_header(lower: str, name: str, value: str) -> None:
    """A Sender header must be one mailbox, by our address rules; a Date header an RFC
    5322 date with its zone (a date without one is read differently by every reader)."""
    if lower == "sender":
        try:
            Address.parse(value)
        except MessageError as exc:
            reason = str(exc).removeprefix("invalid message: ")
            raise MessageError(f"header {name!r} must be one mailbox: {reason}") from None
        return
    try:
        parsed = parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None or parsed[9] is None or not _DATE.match(value.strip()):
        raise MessageError(
            f"header {name!r} is not an RFC 5322 date with a zone "
            f"(like 'Tue, 01 Jul 2025 10:00:00 +0000'): {describe(value)}"
        )
