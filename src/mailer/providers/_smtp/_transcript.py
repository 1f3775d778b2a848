"""The SMTP transcript at DEBUG (``debug: true``, Nodemailer's option of that name).

Every command we write and every reply we read, one log record per line, on the
``mailer.providers.smtp.transcript`` logger, prefixed with the server and a connection
number so that a pool's interleaved sessions can be told apart::

    [smtp.example.com:587 #3] C: MAIL FROM:<app@example.com> SIZE=2048
    [smtp.example.com:587 #3] S: 250 2.1.0 OK

Two kinds of bytes never reach the log:

* **AUTH data.** The AUTH command keeps its mechanism and loses its initial response,
  and every line we send until the server's final answer (a reply other than 334) is
  replaced: PLAIN's and LOGIN's base64 user and password, XOAUTH2's bearer token. This is
  the one structural rule; the logger's filter (:mod:`mailer._log`) still scrubs every
  registered secret that appears in clear (a server echoing one, say).
* **The message.** The payload after DATA is logged as its size only: bodies hold
  personal data, and a transcript is for the protocol.

The session is set up by aiosmtplib (greeting, EHLO, STARTTLS, AUTH) and then run by
:class:`.pipeline.ReplyStream`; :class:`TranscriptSMTP` and :class:`TranscriptStream`
are subclasses of the two that log, used only when ``debug`` is on, so a provider
without it runs the plain classes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from typing import Any, Literal

import aiosmtplib
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default

from ..._log import get_logger
from .pipeline import Reply, ReplyStream
from .wire import Piece, payload_size

__all__ = ["LOGGER_NAME", "Transcript", "TranscriptSMTP", "TranscriptStream", "requested"]

#: the transcript's logger; set to DEBUG on it directly, it turns transcripts on for
#: every SMTP provider, as ``debug: true`` does for one (``mailer --debug`` does this)
LOGGER_NAME = "mailer.providers.smtp.transcript"
_logger = get_logger(LOGGER_NAME)


def requested() -> bool:
    """Whether the transcript logger was itself set to DEBUG (not merely inheriting it:
    a transcript is a lot of lines, so ``mailer`` at DEBUG alone does not ask for one)."""
    return _logger.level == logging.DEBUG


_numbers = itertools.count(1)
_REDACTED = "<redacted>"


class Transcript:
    """The log of one connection; knows whether an AUTH exchange is under way."""

    def __init__(self, where: str) -> None:
        self._prefix = f"[{where} #{next(_numbers)}]"
        self._in_auth = False

    @property
    def enabled(self) -> bool:
        return _logger.isEnabledFor(logging.DEBUG)

    def note(self, text: str) -> None:
        """Something that is neither command nor reply (connected, TLS, closed)."""
        if self.enabled:
            _logger.debug("%s -- %s", self._prefix, text)

    def client(self, data: bytes) -> None:
        """One write: one command, or a pipelined group of them."""
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-1] == b"":
            lines.pop()  # the CRLF of the last command (b"" alone is an empty line)
        for line in lines:
            shown = self._scrub(line)
            if self.enabled:
                _logger.debug("%s C: %s", self._prefix, shown)

    def payload(self, size: int) -> None:
        if self.enabled:
            _logger.debug("%s C: <message, %d bytes, not logged>", self._prefix, size)

    def server(self, code: int, message: str) -> None:
        if self._in_auth and code != 334:
            self._in_auth = False  # the server's verdict ends the exchange
        if not self.enabled:
            return
        lines = message.split("\n") or [""]
        for index, line in enumerate(lines):
            sep = " " if index == len(lines) - 1 else "-"
            _logger.debug("%s S: %d%s%s", self._prefix, code, sep, line)

    def _scrub(self, line: bytes) -> str:
        """The command as it may be logged: AUTH data replaced (see the module doc)."""
        if self._in_auth:
            return _REDACTED
        words = line.split(None, 2)
        if words and words[0].upper() == b"AUTH":
            self._in_auth = True
            mechanism = words[1].decode("ascii", "backslashreplace") if len(words) > 1 else ""
            return f"AUTH {mechanism}" + (f" {_REDACTED}" if len(words) > 2 else "")
        return line.decode("utf-8", "backslashreplace")


class TranscriptSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, logging the session set-up it runs."""

    def __init__(self, *args: Any, transcript: Transcript, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transcript = transcript

    async def connect(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        response = await super().connect(*args, **kwargs)
        if self.use_tls:
            self.transcript.note(f"implicit TLS: {_tls_version(self)}")
        self.transcript.server(response.code, response.message)
        return response

    async def execute_command(
        self,
        *args: bytes,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> SMTPResponse:
        self.transcript.client(b" ".join(args))
        response = await super().execute_command(*args, timeout=timeout)
        self.transcript.server(response.code, response.message)
        return response

    async def starttls(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        # aiosmtplib writes STARTTLS itself (not through execute_command)
        self.transcript.client(b"STARTTLS")
        response = await super().starttls(*args, **kwargs)
        self.transcript.server(response.code, response.message)
        self.transcript.note(f"TLS started: {_tls_version(self)}")
        return response


def _tls_version(smtp: aiosmtplib.SMTP) -> str:
    ssl_object = smtp.get_transport_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        cipher = ssl_object.cipher()
        return f"{ssl_object.version()}, {cipher[0] if cipher else 'unknown cipher'}"
    return "established"


class TranscriptStream(ReplyStream):
    """The mail-transaction layer, logging what it writes and reads."""

    #: every payload is written (and logged) by :meth:`send_payload`, never by the reader
    early_writes = False

    def __init__(self, transport: asyncio.Transport, transcript: Transcript) -> None:
        super().__init__(transport)
        self.transcript = transcript

    @classmethod
    def logged(cls, transport: asyncio.Transport, transcript: Transcript) -> TranscriptStream:
        """Become the protocol of ``transport``, as :meth:`ReplyStream.take_over`."""
        stream = cls(transport, transcript)
        transport.set_protocol(stream)
        return stream

    def send(self, data: bytes, *, replies: int) -> None:
        self.transcript.client(data)
        super().send(data, replies=replies)

    async def send_payload(
        self, pieces: tuple[Piece, ...], *, timeout: float | None, hold: bool = False
    ) -> None:
        self.transcript.payload(payload_size(pieces))
        await super().send_payload(pieces, timeout=timeout, hold=hold)

    def take(self) -> Reply | None:
        reply = super().take()
        if reply is not None:
            self.transcript.server(reply.code, reply.message)
        return reply

    async def read(self, timeout: float | None) -> Reply:
        reply = await super().read(timeout)
        self.transcript.server(reply.code, reply.message)
        return reply
