"""A small SMTP sink on asyncio streams that keeps what it receives and can go down.

Why a second SMTP server beside the aiosmtpd one: ``mailer demo`` runs on it, and must
work from a plain install (no ``[testing]`` extra), and its outage is the clean kind a
demo wants to show. It speaks just enough SMTP for a real client (EHLO/HELO, MAIL, RCPT,
DATA with dot-unstuffing, RSET, NOOP, VRFY, QUIT, pipelined commands) and counts every
message it receives by Message-ID: the ground truth for "nothing lost, nothing
duplicated". For injected faults, TLS and AUTH use :class:`~mailer.testing.SMTPTestServer`.

An outage is simulated the way a real server shuts down, so that no message is left in
doubt: the listening socket closes (new connections are refused), idle connections get an
unsolicited ``421`` and are closed, and a connection in the middle of a transaction gets
``421`` at its next command, including after the final ``.``, where the message is then
*not* kept (or, if it stays quiet past the grace period, an unsolicited ``421``). A
``421`` is a definitive "not accepted", so a client can fail over safely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

__all__ = ["ReceivedMessage", "SMTPSink"]

_MAX_LINE = 1 << 20
_IDLE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the sink stored it: the envelope and the unstuffed data."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    message_id: str | None


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    in_transaction: bool = False
    closing: bool = False


@dataclass(eq=False)
class SMTPSink:
    """An SMTP server on ``host`` that keeps what it receives and can be taken down.

    ``port=0`` picks a free port on the first ``start()``; a later ``start()`` (after
    ``stop()``) binds the same port again, so clients configured with it come back.
    """

    name: str = "sink"
    host: str = "127.0.0.1"
    port: int = 0
    max_size: int = 10 * 1024 * 1024
    #: keep at most this many messages' bytes (counts are always kept)
    keep: int = 10_000
    received: Counter[str] = field(default_factory=Counter)
    messages: list[ReceivedMessage] = field(default_factory=list)
    accepted: int = 0
    connections: int = 0
    _server: asyncio.Server | None = field(default=None, init=False)
    _conns: set[_Conn] = field(default_factory=set, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_MAX_LINE, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 1.0) -> None:
        """Go down like a server shutting down: refuse, say 421, close. Bounded by ``grace``."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._conns):
            if not conn.in_transaction:
                await self._shutdown(conn)
        # Connections mid-transaction get their 421 at the next command; wait for that,
        # then say 421 to the ones still quiet (what a server does when it must go).
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for conn in list(self._conns):
            await self._shutdown(conn)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for conn in list(self._conns):
            conn.writer.transport.abort()

    async def __aenter__(self) -> SMTPSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def duplicates(self) -> dict[str, int]:
        return {mid: n for mid, n in self.received.items() if n > 1}

    # -- the protocol --------------------------------------------------------------------

    async def _shutdown(self, conn: _Conn) -> None:
        if conn.closing:
            return
        conn.closing = True
        with contextlib.suppress(OSError, RuntimeError):
            conn.writer.write(b"421 4.3.2 Service shutting down, closing channel\r\n")
            conn.writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn(writer)
        self._conns.add(conn)
        self.connections += 1
        try:
            await self._session(reader, writer, conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent garbage: drop the connection
        except TimeoutError:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(b"421 4.4.2 Idle timeout, closing channel\r\n")
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        def reply(text: str) -> None:
            writer.write(text.encode("ascii") + b"\r\n")

        reply(f"220 {self.name}.localhost ESMTP mailer demo sink")
        await writer.drain()
        greeted = False
        mail_from: str | None = None
        rcpts: list[str] = []
        while not conn.closing:
            line = await asyncio.wait_for(reader.readline(), _IDLE_TIMEOUT)
            if not line:
                return
            if self._server is None:  # down: refuse whatever comes next
                await self._shutdown(conn)
                return
            text = line.rstrip(b"\r\n").decode("ascii", errors="replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                greeted, mail_from, rcpts = True, None, []
                reply(f"250-{self.name}.localhost greets you")
                reply("250-PIPELINING")
                reply(f"250-SIZE {self.max_size}")
                reply("250-8BITMIME")
                reply("250 ENHANCEDSTATUSCODES")
            elif verb == "HELO":
                greeted, mail_from, rcpts = True, None, []
                reply(f"250 {self.name}.localhost")
            elif verb == "NOOP":
                reply("250 2.0.0 OK")
            elif verb == "RSET":
                mail_from, rcpts = None, []
                conn.in_transaction = False
                reply("250 2.0.0 OK")
            elif verb == "QUIT":
                reply("221 2.0.0 Bye")
                await writer.drain()
                return
            elif verb == "VRFY":
                reply("252 2.1.5 Cannot VRFY user, but will accept message")
            elif verb == "MAIL":
                if not greeted:
                    reply("503 5.5.1 Say EHLO first")
                elif mail_from is not None:
                    reply("503 5.5.1 Nested MAIL command")
                elif not arg.upper().startswith("FROM:"):
                    reply("501 5.5.4 Syntax: MAIL FROM:<address>")
                else:
                    mail_from = _path(arg[5:])
                    conn.in_transaction = True
                    reply("250 2.1.0 OK")
            elif verb == "RCPT":
                if mail_from is None:
                    reply("503 5.5.1 Need MAIL first")
                elif not arg.upper().startswith("TO:"):
                    reply("501 5.5.4 Syntax: RCPT TO:<address>")
                else:
                    rcpts.append(_path(arg[3:]))
                    reply("250 2.1.5 OK")
            elif verb == "DATA":
                if not rcpts or mail_from is None:
                    reply("503 5.5.1 Need RCPT first")
                    continue
                reply("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                data = await self._read_data(reader)
                if self._server is None:
                    # Went down while the data came in: refuse it, keep nothing. The
                    # client gets a definitive 4xx, so it may fail over without doubt.
                    await self._shutdown(conn)
                    return
                if len(data) > self.max_size:
                    reply("552 5.3.4 Message too big")
                else:
                    self._store(mail_from, rcpts, data)
                    reply("250 2.0.0 OK: queued")
                mail_from, rcpts = None, []
                conn.in_transaction = False
            else:
                reply("502 5.5.2 Command not recognized")
            await writer.drain()

    async def _read_data(self, reader: asyncio.StreamReader) -> bytes:
        lines: list[bytes] = []
        size = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), _IDLE_TIMEOUT)
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            if line.startswith(b"."):
                line = line[1:]  # dot-unstuffing (RFC 5321 4.5.2)
            size += len(line)
            if size <= self.max_size:
                lines.append(line)
            else:
                lines = [b"x" * (self.max_size + 1)]  # remember only that it is too big

    def _store(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        headers = BytesHeaderParser(policy=compat32).parsebytes(data)
        raw_id = headers.get("Message-ID")
        message_id = " ".join(str(raw_id).split()) if raw_id is not None else None
        self.accepted += 1
        if message_id is not None:
            self.received[message_id] += 1
        if len(self.messages) < self.keep:
            self.messages.append(ReceivedMessage(mail_from, tuple(rcpts), data, message_id))


def _path(arg: str) -> str:
    """The address inside ``<...>``, ignoring ESMTP parameters (SIZE=, BODY=)."""
    arg = arg.strip()
    if arg.startswith("<"):
        end = arg.find(">")
        return arg[1:end] if end > 0 else arg[1:]
    return arg.split(" ", 1)[0]
