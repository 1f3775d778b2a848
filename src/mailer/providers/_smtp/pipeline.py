"""The mail-transaction wire layer: one write per group of commands, replies in order.

aiosmtplib sets up the session (connect, TLS, EHLO, STARTTLS, AUTH); then
:class:`ReplyStream` takes the transport over (``transport.set_protocol``) for MAIL,
RCPT, DATA, the payload, RSET and QUIT. aiosmtplib cannot pipeline: its protocol parses
at most one reply per ``data_received`` and drops data that arrives while no command
waits, so the second reply of a pipelined group would be lost or mis-paired. This layer
keeps every complete reply in a queue, in order, and counts the replies it is owed:

* ``send(data, replies=n)`` writes ``data`` (one or more commands, or the payload) and
  records that ``n`` more replies are owed;
* ``read(timeout)`` returns the next reply, in the order the commands were written.

A reply that arrives while none is owed (a late reply after a timeout, a 421 before an
idle close) is never queued for a later command: the stream is marked ``unsolicited``
and the connection must be discarded. A timeout is an exception here, and the caller
(:class:`.connection.Connection`) discards the connection on any exception, so a late
reply can never be read as the answer to the next command.

Exceptions are aiosmtplib's (``SMTPServerDisconnected``, ``SMTPResponseException``
with code -1 for a malformed reply) or ``TimeoutError``, so that
:func:`.classify.map_exception` classifies them exactly as it does for aiosmtplib.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import ClassVar, NamedTuple

from aiosmtplib import errors as smtp_errors

from ..._text import QUOTE, clip
from .wire import Piece, payload_size

__all__ = ["Reply", "ReplyStream", "parse_replies"]

#: a single reply line longer than this is malformed (aiosmtplib uses the same bound)
MAX_LINE = 8192
#: a reply (with its continuation lines) longer than this is malformed
MAX_REPLY = MAX_LINE * 4
#: payloads are handed to the transport in pieces of this size, waiting for the socket
#: to drain between them, so a large message is never copied whole into its buffer
CHUNK = 256 * 1024


class Reply(NamedTuple):
    """One SMTP reply: the code and the text (continuation lines joined by newlines)."""

    code: int
    message: str

    @property
    def lines(self) -> list[str]:
        """The text of each line of the reply, in order (EHLO's first is the greeting)."""
        return self.message.split("\n")


def parse_replies(buffer: bytearray, out: deque[Reply], limit: int) -> None:
    """Move up to ``limit`` complete replies from the front of ``buffer`` to ``out``.

    The one parser of SMTP replies of ours: this stream's and ``mailer doctor``'s (which
    feeds it line by line). Raises ``SMTPResponseException(-1, ...)`` for a malformed or
    oversized reply, worded as aiosmtplib words its own, so that a bad reply reads the same
    whichever reader met it. What is left in ``buffer`` is an incomplete reply (or more
    than ``limit`` replies).
    """
    start = 0
    lines: list[bytes] = []
    code = -1
    taken = 0
    while taken < limit:
        end = buffer.find(b"\n", start)
        if end == -1:
            break
        line = bytes(buffer[start : end + 1])
        if len(line) > MAX_LINE:
            raise smtp_errors.SMTPResponseException(-1, "Response too long")
        head = line[:3]
        if not head.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
            text = clip(line.decode("utf-8", "replace").strip(), QUOTE)
            raise smtp_errors.SMTPResponseException(-1, f"Malformed SMTP response line: {text}")
        code = int(head)
        lines.append(line[4:].strip(b" \t\r\n"))
        start = end + 1
        if line[3:4] != b"-":
            text = b"\n".join(lines).decode("utf-8", "surrogateescape")
            out.append(Reply(code, text))
            del buffer[:start]
            start = 0
            lines = []
            taken += 1
    if len(buffer) > MAX_REPLY:
        raise smtp_errors.SMTPResponseException(-1, "Response too long")


class ReplyStream(asyncio.Protocol):
    """The protocol of an SMTP transport once the session is set up; see the module doc."""

    #: :meth:`arm` is honoured (the transcript's stream logs each write and says no)
    early_writes: ClassVar[bool] = True

    def __init__(self, transport: asyncio.Transport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = transport
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        #: replies owed for commands written and not yet received
        self._owed = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        #: writes held back by ``send_payload(hold=True)`` until :meth:`flush_soon`'s turn
        self._held: list[bytes] | None = None
        #: set when the server said something nobody asked for: never reuse
        self.unsolicited = False
        #: replies taken so far: with ``_owed``, where a group's replies are in the stream
        self._taken = 0
        #: :meth:`arm`'s callback, its context, its group's first reply and reply count
        self._armed: tuple[Callable[[list[Reply]], None], contextvars.Context, int, int] | None
        self._armed = None

    @classmethod
    def take_over(cls, transport: asyncio.Transport) -> ReplyStream:
        """Become the protocol of ``transport`` (between commands: nothing is owed)."""
        stream = cls(transport)
        transport.set_protocol(stream)
        return stream

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        t = self._transport
        return t is not None and not t.is_closing() and self._error is None

    @property
    def idle(self) -> bool:
        """Nothing owed, nothing unread, nothing unexpected: safe for a new transaction."""
        return self.connected and not self.unsolicited and not self._owed and not self._replies

    def close(self) -> None:
        if self._transport is not None:
            self._flush()  # what was written stays written, as without the hold
            self._transport.close()

    # -- writing -----------------------------------------------------------------------

    def send(self, data: bytes, *, replies: int) -> None:
        """Write ``data`` at once; ``replies`` more replies are now owed."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._error is not None:
            raise self._error or smtp_errors.SMTPServerDisconnected("Connection lost")
        self._owed += replies
        held = self._held
        if held is not None:
            held.append(data)  # behind the held payload, in one write with it
        else:
            transport.write(data)

    @property
    def holding(self) -> bool:
        """A payload is held back for :meth:`flush_soon`'s turn."""
        return self._held is not None

    def flush_soon(self) -> None:
        """Write what ``send_payload(hold=True)`` held, at this loop turn's end.

        The callbacks already due run first: the pool's hand-off has just woken the next
        send, whose MAIL/RCPT/DATA (:meth:`send`, in the same turn) then join the held
        payload, so both leave in one ``send()`` and usually draw one read of replies.
        """
        if self._held is not None:
            self._loop.call_soon(self._flush)

    def hold(self, payload: bytes) -> None:
        """:meth:`send_payload` of one small payload with ``hold=True``, without awaiting
        (the reader's early write, :meth:`arm`): the end of data is in, its reply owed,
        and :meth:`flush_soon` writes it. Nothing may be held already."""
        assert self._held is None
        self._owed += 1
        self._held = [payload]

    def arm(self, callback: Callable[[list[Reply]], None], replies: int) -> None:
        """Call ``callback`` with the replies to the group just written (its last
        ``replies`` owed) from :meth:`data_received`, as soon as they have all come and
        before anyone is woken: if their reader has not taken one of them yet.

        The 354 that lets a payload go is then answered in the turn that reads it: the
        payload and the group of the send behind it are written before the previous
        send's verdict is settled (its coroutine, with all its bookkeeping, runs after).
        One callback at a time (the newest group's); it runs in the context of the task
        that armed it. Once the replies' reader takes one, the callback is dropped.
        """
        first = self._taken + self._owed - replies
        self._armed = (callback, contextvars.copy_context(), first, replies)

    def disarm(self) -> None:
        """Forget :meth:`arm`'s callback (its transaction reads its replies itself)."""
        self._armed = None

    def _fire(self) -> None:
        armed = self._armed
        assert armed is not None
        callback, context, first, count = armed
        start = first - self._taken
        if start < 0:  # their reader has begun: it writes what follows itself
            self._armed = None
            return
        if len(self._replies) < start + count:
            return  # not all here yet
        self._armed = None
        try:
            context.run(callback, list(islice(self._replies, start, start + count)))
        except Exception as exc:  # pragma: no cover - the callback decides, never raises
            self._fail(exc)  # what it may have written is in doubt: its reader raises
            self.close()

    def _flush(self) -> None:
        held, self._held = self._held, None
        transport = self._transport
        if not held or transport is None:
            return
        try:
            transport.write(held[0] if len(held) == 1 else b"".join(held))
        except Exception as exc:  # pragma: no cover - asyncio's transports log, not raise
            self._fail(exc)  # the reader raises it: the "." may not have left
            transport.close()

    async def send_payload(
        self, pieces: tuple[Piece, ...], *, timeout: float | None, hold: bool = False
    ) -> None:
        """Write the payload pieces in chunks, waiting for the socket between them.

        One reply is owed once the last chunk (with the final ".") is written. A failure
        raised here means the end of the data has *not* been written: transient (or a
        MessageError from a source whose file changed, also before the end).

        ``hold``: a payload that goes in one write is kept back for :meth:`flush_soon`
        instead (then the caller must call it). Nothing else is written before it, the
        stream keeps the order, and :meth:`close` writes it first: the bytes and their
        order on the wire are as without the hold, only later in the same loop turn.

        A source (a large attachment) is encoded here, one chunk of about 234 KiB at a
        time, and the loop gets a turn after each chunk even when the socket keeps up:
        encoding a chunk holds it for a few milliseconds, never the whole attachment.
        """
        self._flush()  # a held write goes first (none is, in practice: 354 came before)
        total = payload_size(pieces)
        if total <= CHUNK and len(pieces) > 1 and all(isinstance(p, bytes) for p in pieces):
            pieces = (b"".join(p for p in pieces if isinstance(p, bytes)),)  # one send()
        hold = hold and len(pieces) == 1 and total <= CHUNK and isinstance(pieces[0], bytes)
        written = 0
        for piece in pieces:
            if isinstance(piece, bytes):
                view = memoryview(piece)
                chunks = (view[i : i + CHUNK] for i in range(0, len(view), CHUNK))
                streamed = False
            else:
                chunks, streamed = piece.chunks(), True  # type: ignore[assignment]
            for chunk in chunks:
                last = written + len(chunk) >= total
                if self._paused:
                    await self._wait_drain(timeout)
                elif streamed:
                    await asyncio.sleep(0)  # the loop's turn between encoded chunks
                transport = self._transport
                if transport is None or transport.is_closing() or self._error is not None:
                    raise self._error or smtp_errors.SMTPServerDisconnected("Connection lost")
                if last:
                    self._owed += 1
                    if hold:
                        self._held = [bytes(chunk)]
                        return
                transport.write(chunk)
                written += len(chunk)

    async def _wait_drain(self, timeout: float | None) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()
        waiter = self._drain
        handle = None
        if timeout is not None:
            handle = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- reading -----------------------------------------------------------------------

    def take(self) -> Reply | None:
        """The next reply owed when it has already come, else None (then :meth:`read`).

        Most replies of a pipelined group arrive together; taking one needs no timeout
        to work out and no coroutine."""
        if self._replies:
            self._owed -= 1
            self._taken += 1
            return self._replies.popleft()
        return None

    async def read(self, timeout: float | None) -> Reply:
        """The next reply owed, in order; TimeoutError after ``timeout`` seconds."""
        if self._replies:
            self._owed -= 1
            self._taken += 1
            return self._replies.popleft()
        if self._error is not None:
            raise self._error
        if self._owed <= 0:  # pragma: no cover - a caller bug, not a server's
            raise RuntimeError("read() with no reply owed")
        waiter = self._loop.create_future()
        self._waiter = waiter
        handle = None
        if timeout is not None:
            handle = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        if self._replies:
            self._owed -= 1
            self._taken += 1
            return self._replies.popleft()
        raise self._error or smtp_errors.SMTPServerDisconnected("Connection lost")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # the writer then sees the error

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer.extend(data)
        room = self._owed - len(self._replies)
        try:
            parse_replies(self._buffer, self._replies, max(room, 0))
        except smtp_errors.SMTPResponseException as exc:
            self._fail(exc)
            self.close()
            return
        if self._buffer and len(self._replies) >= self._owed and b"\n" in self._buffer:
            # A complete line nobody asked for: a late reply after a timeout, or the
            # server talking out of turn. It must never answer a later command.
            self.unsolicited = True
            self._fail(smtp_errors.SMTPServerDisconnected("unexpected reply from the server"))
            self.close()
            return
        if self._replies:
            if self._armed is not None:
                self._fire()  # before the wake-up: see arm()
            self._wake()

    def eof_received(self) -> bool:
        self._fail(smtp_errors.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = smtp_errors.SMTPServerDisconnected("Connection lost")
        if exc is not None:
            error.__cause__ = exc
        self._fail(error)
        self._transport = None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
