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

from ...errors import MessageError

__all__ = [
    "check_envelope_address",
    "command_line",
    "encode_data",
    "mail_command",
    "rcpt_command",
]

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# C0 controls, space, DEL, C1 controls and the Unicode line separators.
_FORBIDDEN_IN_ADDRESS = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029<>]")


def encode_data(payload: bytes) -> bytes:
    """The DATA payload: CRLF-only, dot-stuffed, with the ``.<CRLF>`` terminator."""
    text = _LINE_ENDING.sub(b"\r\n", payload)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return _LEADING_DOT.sub(b"..", text) + b".\r\n"


def check_envelope_address(address: str, what: str) -> str:
    """Refuse an address that could break out of ``MAIL FROM:<...>`` / ``RCPT TO:<...>``.

    Message already validates addresses; this is the last check at the point where an
    address becomes a command, because a provider may be handed addresses by other code.
    """
    if not address or _FORBIDDEN_IN_ADDRESS.search(address) or not address.isascii():
        shown = repr(address[:80])
        raise MessageError(
            f"{what} cannot go into an SMTP command (empty, non-ASCII, space, angle "
            f"bracket or control character): {shown}"
        )
    return address


def mail_command(sender: str, *, size: int | None = None) -> tuple[bytes, ...]:
    """``MAIL FROM:<sender> [SIZE=n]`` as the argument tuple aiosmtplib sends."""
    check_envelope_address(sender, "envelope sender")
    args: tuple[bytes, ...] = (b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if size is not None:
        args += (b"SIZE=%d" % size,)
    return args


def rcpt_command(recipient: str) -> tuple[bytes, ...]:
    """``RCPT TO:<recipient>`` as the argument tuple aiosmtplib sends."""
    check_envelope_address(recipient, "envelope recipient")
    return (b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")


def command_line(args: tuple[bytes, ...]) -> bytes:
    """One command as written to the socket (for pipelining, which writes several)."""
    return b" ".join(args) + b"\r\n"
