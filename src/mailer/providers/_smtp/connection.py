"""One SMTP session's lifecycle: connect, TLS, EHLO, AUTH, then transactions, QUIT.

:class:`Connection` is what the pool and the provider hold. Its state and its exception
boundary are :class:`._session.Session`'s; the MAIL/RCPT/DATA exchange is
:mod:`._exchange`'s. Here are the set-up (aiosmtplib runs greeting, EHLO, STARTTLS and
AUTH; then the transport is handed to :class:`.pipeline.ReplyStream`), the entry to a
transaction (which transactions share the connection, and when it is closed) and QUIT.
This is the only module that drives aiosmtplib.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import cast

import aiosmtplib
from aiosmtplib import errors as smtp_errors

from ..._errors import AuthError, TransientError, UnsupportedFeature
from ..._log import get_logger
from . import _happy, _proxy
from ._exchange import Delivery, transactions
from ._session import COURTESY_TIMEOUT, ConnectionStale, LoopLagged, Session, Settings
from ._transcript import Transcript, TranscriptSMTP, TranscriptStream
from ._transcript import requested as transcript_requested
from .classify import Endpoint, Phase
from .config import SMTPConfig, is_loopback
from .pipeline import ReplyStream
from .wire import Piece, command_line, declared_size, mail_command

__all__ = ["Connection", "ConnectionStale", "Delivery", "Settings"]

_logger = get_logger("mailer.providers.smtp")


async def _tcp_connect(settings: Settings) -> tuple[socket.socket, str]:
    """A connected non-blocking socket (so the TLS name can differ from the host), and
    where it leads, for the transcript: through the proxy, or to the first of the host's
    addresses to answer (:mod:`._happy`)."""
    cfg = settings.config
    if settings.proxy is not None:
        sock = await _proxy.connect(settings.proxy, cfg.host, cfg.port_number)
        return sock, f"{settings.endpoint.where} through proxy {settings.proxy.shown}"
    return await _happy.connect(cfg.host, cfg.port_number)


def _log_plaintext(cfg: SMTPConfig, endpoint: Endpoint) -> None:
    """Once per connection: mail on it crosses the network unencrypted (never silently)."""
    why = "ignore_tls: true" if cfg.ignore_tls else "require_tls: false"
    level = logging.DEBUG if is_loopback(cfg.host) else logging.WARNING
    _logger.log(
        level,
        "SMTP connection to %s is not encrypted (%s): messages on it go out in plaintext",
        endpoint.where,
        why,
    )


class Connection(Session):
    """One session with the server; used by one task at a time (and, pipelined, by the
    next send once this one's final "." is written)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        #: done when the last transaction started has read all its replies
        self._tail: asyncio.Future[None] | None = None

    # -- session setup -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, (implicit TLS), greeting, EHLO, (STARTTLS, EHLO), (AUTH).

        A step whose timer fired only because this process's event loop was held up
        (its timeout cut short by the pre-commit budget, which the loop's lag has moved
        on since: :meth:`mailer._attempt.AttemptContext.extend`) is not the server's
        failure: the session is set up again from the start, in what is left of the
        budget. aiosmtplib cannot resume a step it timed out, and before MAIL nothing of
        the message has left, so starting over is safe. Each start over needs more lag,
        so it ends with the budget or the send's deadline.
        """
        while True:
            try:
                await self._open()
                return
            except LoopLagged as lagged:
                self.abort()
                self.broken = False  # a new session, not the old one reused
                _logger.debug(
                    "%s: %s timed out while the event loop was held up; setting up again",
                    self.endpoint.where,
                    lagged.phase.value,
                )
            except BaseException:
                self.abort()
                raise

    async def _open(self) -> None:
        s = self.settings
        cfg = s.config
        timeout, label = self.timeout("connection_timeout")
        with self.guard(Phase.CONNECT, timeout, label, cut=label != "connection_timeout"):
            self.sock, peer = await asyncio.wait_for(_tcp_connect(s), timeout)
        secure = cfg.implicit_tls
        wanted = cfg.debug or transcript_requested()
        transcript = self.transcript = Transcript(s.endpoint.where) if wanted else None
        client: Callable[..., aiosmtplib.SMTP] = aiosmtplib.SMTP
        if transcript is not None:
            transcript.note(f"connected to {peer}")
            client = functools.partial(TranscriptSMTP, transcript=transcript)
        smtp = client(
            hostname=cfg.tls_name if secure else cfg.host,
            sock=self.sock,
            use_tls=secure,
            start_tls=False,
            tls_context=s.tls_context if secure else None,
            local_hostname=s.ehlo_name,
            timeout=cfg.socket_timeout,
        )
        self.smtp_client = smtp
        # From here the socket belongs to asyncio's transport (created before any await
        # in create_connection): closing it ourselves would free its file descriptor
        # while the loop still maps it to that transport.
        self.sock = None
        # With implicit TLS, aiosmtplib runs the handshake and the greeting under one
        # timer: greeting_timeout covers both.
        await self.command(Phase.GREETING, lambda t: smtp.connect(timeout=t), "greeting_timeout")
        self.encrypted = secure
        await self._ehlo(smtp)
        if not secure and not cfg.ignore_tls:
            if smtp.supports_extension("starttls"):
                await self.command(
                    Phase.STARTTLS,
                    lambda t: smtp.starttls(
                        server_hostname=cfg.tls_name, tls_context=s.tls_context, timeout=t
                    ),
                    "connection_timeout",
                )
                self.encrypted = True
                await self._ehlo(smtp)
            elif cfg.require_tls:
                raise TransientError(
                    f"{s.endpoint.where} does not offer STARTTLS and require_tls is on (the "
                    "default for every host but loopback): refusing to send in plaintext. "
                    "A man in the middle may be stripping STARTTLS; if the server really has "
                    "no TLS, set require_tls: false to send in clear",
                    retry_here=False,  # a TLS policy does not change in seconds
                )
        if not self.encrypted:
            _log_plaintext(cfg, s.endpoint)
        if cfg.auth is not None:
            if not self.encrypted and not cfg.allow_plaintext_auth:
                raise AuthError(
                    f"refusing to send AUTH over a plaintext connection to "
                    f"{s.endpoint.where}: the server did not offer STARTTLS; use "
                    "secure=True or a port with STARTTLS, or set allow_plaintext_auth=True "
                    "for a trusted local server"
                )
            from .auth import authenticate

            await authenticate(self, cfg.auth, s.tokens)
        self._take_over(smtp)
        self.last_used = time.monotonic()

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        async def ehlo_or_helo(timeout: float | None) -> None:
            try:
                await smtp.ehlo(timeout=timeout)
            except smtp_errors.SMTPHeloError as exc:
                if exc.code == 421 or exc.code < 500 or not smtp.is_connected:
                    raise
                await smtp.helo(timeout=timeout)  # an old server without ESMTP

        await self.command(Phase.EHLO, ehlo_or_helo)

    def _take_over(self, smtp: aiosmtplib.SMTP) -> None:
        """Hand the transport from aiosmtplib to :class:`.pipeline.ReplyStream`."""
        transport = smtp.transport
        protocol = smtp.protocol
        if transport is None or protocol is None or not protocol.is_connected:
            raise ConnectionStale(f"connection to {self.endpoint.where} is closed")
        if self.transcript is not None:
            self.stream = TranscriptStream.logged(
                cast(asyncio.Transport, transport), self.transcript
            )
        else:
            self.stream = ReplyStream.take_over(cast(asyncio.Transport, transport))
        self.pipelining = smtp.supports_extension("pipelining")
        self.size = smtp.supports_extension("size")
        self.smtputf8 = smtp.supports_extension("smtputf8")
        self.eightbitmime = smtp.supports_extension("8bitmime")

    # -- mail --------------------------------------------------------------------------

    async def transaction(
        self,
        sender: str,
        recipients: list[str],
        payload: bytes | tuple[Piece, ...],
        *,
        smtputf8: bool = False,
        payload_8bit: bytes | tuple[Piece, ...] | None = None,
    ) -> Delivery:
        """MAIL, RCPT for each recipient, DATA, payload; the server's verdict.

        ``payload_8bit`` is sent instead of ``payload`` when the server takes 8-bit
        data (8BITMIME, RFC 6152; or SMTPUTF8 in use, RFC 6531 3.1, which implies it).

        ``payload`` is already encoded (:func:`.wire.encode_data`, or the pieces of
        :func:`.wire.data_pieces`): CRLF, dot-stuffed, terminated. With PIPELINING,
        MAIL, every RCPT and DATA leave in one write (two round trips per message);
        without it, one command at a time. Raises ConnectionStale when the session
        failed before MAIL was accepted, so that nothing of this message left.
        """
        stream = self.ready()
        if smtputf8 and not self.smtputf8:  # before any byte of this transaction
            raise UnsupportedFeature(
                f"{self.endpoint.where} does not offer the SMTPUTF8 extension (RFC 6531), "
                "which this message needs for its non-ASCII address(es); nothing was sent"
            )
        body_8bit = payload_8bit is not None and (self.eightbitmime or (smtputf8 and self.smtputf8))
        if body_8bit:
            assert payload_8bit is not None
            payload = payload_8bit
        pieces = (payload,) if isinstance(payload, bytes) else payload
        size = declared_size(pieces) if self.size else None
        mail = command_line(
            mail_command(
                sender, size=size, smtputf8=smtputf8, body_8bit=body_8bit and self.eightbitmime
            )
        )
        previous, done = self._tail, asyncio.get_running_loop().create_future()
        self._tail = done
        self.inflight += 1
        try:
            return await transactions(
                self, stream, previous, recipients, mail, pieces, smtputf8=smtputf8
            )
        finally:
            self.inflight -= 1
            if not done.done():
                done.set_result(None)
            if self.broken and not self.inflight:
                self.abort()  # discarded while another transaction was reading
            self.last_used = time.monotonic()

    async def quit(self) -> None:
        """Say goodbye politely, then close whatever happens."""
        smtp = self.smtp_client
        stream = self.stream
        timeout = min(self.settings.config.socket_timeout, COURTESY_TIMEOUT)
        try:
            if self.broken:
                pass
            elif stream is not None:
                if stream.idle:
                    with contextlib.suppress(Exception):
                        stream.send(b"QUIT\r\n", replies=1)
                        await stream.read(timeout)
            elif smtp is not None and smtp.is_connected:
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=timeout)
        finally:
            self.abort()

    def __repr__(self) -> str:
        state = "usable" if self.usable else "closed"
        return f"<Connection {self.settings.endpoint.where} {state} messages={self.messages}>"
