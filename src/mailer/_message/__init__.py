"""Message, Address and Attachment: validated on construction, rendered to MIME once.

Everything a caller gives us is checked *before* any I/O, so that no provider ever sees
a message that could say something the caller did not ask for:

* CR, LF and every other control character are refused in header values, names,
  addresses, file names and tags (Unicode line separators too).
* Encoded-words in header values are decoded and checked as well: Python 3.11.7's
  email package (CVE-2024-6923) decodes ``=?utf-8?q?=0D=0A?=`` and writes the newline
  back out raw when it refolds a header.
* Addresses are parsed by a strict parser of our own, not ``email.utils.parseaddr``
  (CVE-2023-27043). Forms whose routing is ambiguous between parsers are refused: a
  quoted local part holding ``@`` (``"a@evil.example x"@internal.example``, which
  Nodemailer routed to evil.example, GHSA-mm7p-fcc7-pg87), comments and specials glued
  to addresses (``alice@example.org)<bob@evil.example>``), several addresses in one item.
* The rendered bytes are checked once more: CRLF-only line endings, no NUL, no line over
  998 octets, and exactly the header lines we meant to write (a belt to the braces above).

The rendered bytes are cached on the (frozen) message: every attempt, on every provider,
sends the same bytes and the same Message-ID.

One concept a module: ``_checks`` (the field rules and the strict base), ``address``,
``attachment``, ``model`` (Message, Envelope, the defaults), ``message_id`` (made on first
read, shared by copies), ``render`` (the rendering made once, the stdlib renderer),
``mime`` and ``stream`` (the fast renderer, streamed parts), ``spooled`` (a body kept in a
file, and the field descriptor that reads it), ``wire`` (the final check).
"""

# The library's own modules and tests also import these from here (not in __all__):
from ._checks import HEADER_NAME as HEADER_NAME
from ._checks import MAX_FILENAME_CHARS as MAX_FILENAME_CHARS
from ._checks import MAX_HEADER_CHARS as MAX_HEADER_CHARS
from ._checks import MAX_HEADERS as MAX_HEADERS
from .address import Address
from .attachment import Attachment
from .model import Envelope, Message
from .model import MessageDefaults as MessageDefaults
from .wire import check_wire as check_wire

__all__ = ["Address", "Attachment", "Envelope", "Message"]
