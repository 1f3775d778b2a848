"""A request body streamed with its length known: raw MIME sent without being held whole.

SES's raw ``SendEmail`` wants the message base64-encoded inside JSON, Mailgun's
``messages.mime`` as a part of a multipart form. Built whole, a 50 MiB message costs
the rendering joined, its base64 (or the form) and httpx's copy: several times its
size. :class:`StreamedBody` is the request body as three pieces instead, the bytes
before the message, the message as it is encoded (from the rendering's chunks, as SMTP
sends it), and the bytes after, with ``Content-Length`` computed from the sizes the
rendering knows before a byte is read (never ``Transfer-Encoding: chunked``, which some
APIs and proxies refuse).

What is around the message is made by httpx itself (:func:`around`): the JSON or form
with a unique placeholder where the message goes, split at it, so the bytes are those
httpx would send for the whole message (the tests compare both).

The body is re-iterable: every iteration starts from the first byte and encodes the
message again, so a retry, a redirect or a second provider re-streams it whole
(httpx re-iterates a body object that is not a generator). Between encoded chunks the
event loop gets a turn, as in the SMTP path. An API whose signature covers the body
(SES's SigV4 ``x-amz-content-sha256``) asks for ``digest``: one hashing pass made
before the request, on the event loop a chunk at a time (the loop's turn after each):
in a worker thread the pass held the GIL and the loop waited for it, and for the CPU,
at every switch (a 27 ms median stall for a 64 MiB message, against 10-15 ms here).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import anyio.lowlevel
import httpx

__all__ = ["StreamedBody", "around", "base64_chunks", "base64_size", "placeholder"]

#: bytes of input per base64 call when a stream is re-cut (a multiple of 3)
_B64_GROUP = 3 * 64 * 1024
#: bytes per write of the body: the event loop gets a turn after each
_WRITE = 64 * 1024


def placeholder() -> str:
    """A token that marks where the message goes in the JSON or form made by httpx."""
    return f"mailer-streamed-body-{secrets.token_hex(16)}"


def around(request: httpx.Request, mark: str) -> tuple[bytes, bytes]:
    """The bytes of ``request``'s body before and after ``mark`` (which must occur once)."""
    content = request.read()
    token = mark.encode("ascii")
    if content.count(token) != 1:  # pragma: no cover - a random 128-bit token
        raise RuntimeError("the streamed body's placeholder is not unique in the request")
    head, _, tail = content.partition(token)
    return head, tail


def base64_size(size: int) -> int:
    """Length of the unbroken base64 of ``size`` bytes (JSON's form: no line breaks)."""
    return (size + 2) // 3 * 4


def base64_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Unbroken base64 of the concatenated ``chunks``, encoded chunk by chunk (each
    call gets a multiple of 3 bytes, so the pieces join to the one-call encoding)."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        for i in range(0, cut, _B64_GROUP):
            yield base64.b64encode(data[i : min(i + _B64_GROUP, cut)])
    if carry:
        yield base64.b64encode(carry)


class StreamedBody:
    """``head`` + the encoded message + ``tail``, ``length`` bytes in all.

    ``message`` makes a new iterator over the encoded message each time it is called
    (so from its first byte), ``size`` is its length in bytes. A message that yields
    more or fewer bytes than ``size`` is a bug that h11 refuses (it counts against
    ``Content-Length``) rather than send a truncated body.
    """

    __slots__ = ("_digest", "content_type", "head", "length", "message", "size", "tail")

    def __init__(
        self,
        head: bytes,
        message: Callable[[], Iterator[bytes]],
        size: int,
        tail: bytes,
        content_type: str,
    ) -> None:
        self.head, self.message, self.size, self.tail = head, message, size, tail
        self.content_type = content_type
        self.length = len(head) + size + len(tail)
        self._digest: str | None = None

    def headers(self) -> dict[str, str]:
        """What httpx would have set for the whole body: its length and type."""
        return {"Content-Length": str(self.length), "Content-Type": self.content_type}

    def chunks(self) -> Iterator[bytes]:
        """The whole body, in order, from its first byte (synchronous: for hashing)."""
        yield self.head
        yield from self.message()
        yield self.tail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        for chunk in self.message():
            # a few hundred KiB encoded: written in pieces, the loop's turn after each
            # (one socket send of 400 KiB held the loop for several ms under load)
            for i in range(0, len(chunk), _WRITE):
                yield chunk[i : i + _WRITE] if len(chunk) > _WRITE else chunk
                await anyio.lowlevel.checkpoint()
        yield self.tail

    async def digest(self) -> str:
        """SHA-256 of the body, hex; made once, by one encoding pass a chunk at a time."""
        if self._digest is None:
            hasher = hashlib.sha256()
            for chunk in self.chunks():
                hasher.update(chunk)
                await anyio.lowlevel.checkpoint()
            self._digest = hasher.hexdigest()
        return self._digest

    def __repr__(self) -> str:
        return f"<StreamedBody {self.length} bytes, {self.content_type.split(';')[0]}>"
