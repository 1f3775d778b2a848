"""One SMTP session: connect, TLS, EHLO, AUTH, transactions, QUIT.

This is the only module that touches aiosmtplib, and :meth:`Connection._guard` is the
only place its exceptions (and ssl's, and OSError) are turned into the error tree, via
:func:`.classify.map_exception`.

A connection whose reply stream is in doubt (a timeout or a cancellation while a command
was outstanding, a reply we could not parse) is marked broken and closed at once: a late
reply would otherwise be read as the answer to the next command, which can make a
refused message look accepted.

:meth:`Connection.transaction` is the whole MAIL/RCPT/DATA exchange. Once the session
is set up (greeting, EHLO, STARTTLS, AUTH: aiosmtplib), the transport is handed to
:class:`.pipeline.ReplyStream`, which writes MAIL, every RCPT and DATA in one write when
the server offers PIPELINING (RFC 2920) and reads the replies in order. The
classification is the same either way: a failure before the final "." was written is
transient, one after it is uncertain, and a connection whose reply stream is in doubt is
discarded.

One message may take several transactions: a server that answers RCPT with "452 4.5.3
too many recipients" (RFC 5321 section 4.5.3.1.10) wants the rest in another transaction,
and gets them, on the same connection, in batches of the size it took. The first
transaction's end of data is the commit point; once a transaction has delivered, a later
one's failure is reported per recipient in the result (``rejected``) instead of raised,
because raising would fail the whole message over and send it twice to the recipients
that already have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

import aiosmtplib
from aiosmtplib import errors as smtp_errors

from ..._attempt import current_attempt
from ..._errors import (
    AuthError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    TransientError,
    UnsupportedFeature,
)
from ..._log import get_logger
from . import _happy, _proxy
from ._proxy import ProxyURL
from ._transcript import Transcript, TranscriptSMTP, TranscriptStream
from ._transcript import requested as transcript_requested
from .classify import (
    Endpoint,
    Phase,
    classify_recipients,
    classify_reply,
    map_exception,
    too_many_recipients,
)
from .config import SMTPConfig, is_loopback
from .oauth import TokenSource
from .pipeline import Reply, ReplyStream
from .wire import Piece, command_line, declared_size, mail_command, rcpt_command

__all__ = ["Connection", "ConnectionStale", "Delivery", "Settings"]

_T = TypeVar("_T")
_logger = get_logger("mailer.providers.smtp")

#: QUIT and RSET are courtesy; never wait long for them.
_COURTESY_TIMEOUT = 5.0


class ConnectionStale(TransientError):
    """The connection failed before MAIL was accepted: nothing of this message was sent.

    On a reused pooled connection this usually means the server dropped it while it sat
    idle, so the pool retries once on a new connection instead of failing the message.
    Being a TransientError, it is also the right thing for a caller to see.
    """


class _LoopLagged(Exception):
    """A set-up step timed out only because this process's event loop was held up: not
    the server's failure (see :meth:`Connection.open`, which sets up again). Never leaves
    this module."""

    def __init__(self, phase: Phase) -> None:
        super().__init__(phase)
        self.phase = phase


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a connection needs, built once per provider."""

    config: SMTPConfig
    endpoint: Endpoint
    tls_context: ssl.SSLContext
    ehlo_name: str
    tokens: TokenSource | None = None
    #: connect through this proxy (``proxy``), else directly with Happy Eyeballs
    proxy: ProxyURL | None = None


@dataclass(slots=True)
class Delivery:
    """What the server said about the message (one transaction or several) it accepted."""

    accepted: list[str]
    rejected: dict[str, str] = field(default_factory=dict)
    response: str = ""


@dataclass(slots=True)
class _Recipients:
    """The RCPT replies of one transaction, sorted."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: "too many recipients": to be sent in the next transaction, with the reply given
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: RCPTs answered before the first deferral: how many the server takes per transaction
    taken: int | None = None

    def all_refused(self) -> dict[str, tuple[int, str]]:
        return {**self.refused, **self.deferred}


def _reply_text(code: int, text: str) -> str:
    return f"{code} {text}".strip()


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


class Connection:
    """One session with the server; used by one task at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._smtp: aiosmtplib.SMTP | None = None
        self._sock: socket.socket | None = None
        #: the DEBUG transcript (``debug``), else None
        self._transcript: Transcript | None = None
        #: transactions completed on this connection (for max_messages)
        self.messages = 0
        self.last_used = time.monotonic()
        #: set when the reply stream is in doubt; a broken connection is never reused
        self.broken = False
        #: whether the session is encrypted (implicit TLS or STARTTLS)
        self.encrypted = False
        #: whether the server offers PIPELINING (RFC 2920): one write per transaction
        self.pipelining = False
        self._size = False
        self._smtputf8 = False
        self._8bitmime = False
        #: the mail-transaction layer, once the session is set up
        self._stream: ReplyStream | None = None
        #: a failed pipelined transaction's RSET, sent in front of the next MAIL
        self._needs_rset = False
        #: transactions under way (two when the next one rides with a payload)
        self._inflight = 0
        #: done when the last transaction started has read all its replies
        self._tail: asyncio.Future[None] | None = None
        #: set by the pool for one transaction: called once its final "." is written, so
        #: the next message's MAIL/RCPT/DATA can follow it in the same round trip
        self.on_handoff: Callable[[], None] | None = None
        self._endpoint = settings.endpoint

    # -- state -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, and nothing unread or unexpected on it: fit for the next transaction."""
        if self.broken:
            return False
        stream = self._stream
        if stream is not None:
            if self._inflight:  # a transaction that will read what is owed
                return stream.connected and not stream.unsolicited
            return stream.idle
        return self._smtp is not None and self._smtp.is_connected

    @property
    def busy(self) -> bool:
        """A transaction is under way on this connection."""
        return self._inflight > 0

    @property
    def smtp(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            raise ConnectionStale(f"connection to {self._settings.endpoint.where} is closed")
        return self._smtp

    def discard(self) -> None:
        """Never reuse; close now, or once the transaction under way has its verdict."""
        self.broken = True
        if not self._inflight:
            self.abort()

    def abort(self) -> None:
        """Close at once, without QUIT (for a broken or half-open session)."""
        self.broken = True
        if self._stream is not None:
            self._stream.close()
        if self._smtp is not None:
            self._smtp.close()
        if self._sock is not None:
            self._sock.close()

    # -- the exception boundary --------------------------------------------------------

    def _timeout(self, name: str) -> tuple[float | None, str]:
        """The step's timeout (``name``, cut to the attempt's limit) and its label; the
        label is ``name`` itself (the same object) when nothing cut it short."""
        configured: float = getattr(self._settings.config, name)
        attempt = current_attempt()
        value = attempt.timeout(configured)
        if value == configured:
            return value, name
        return value, f"{name}, cut short by {attempt.limited_by()}"

    @contextlib.contextmanager
    def _guard(
        self, phase: Phase, timeout: float | None, label: str, *, cut: bool = False
    ) -> Iterator[None]:
        """Map what the step raises. ``cut``: its timeout was cut short by the attempt;
        a set-up step whose timer fired while this process's event loop was held up
        raises :class:`_LoopLagged` instead, for :meth:`open` to start over."""
        try:
            yield
        except (DeliveryError, MessageError):
            raise
        except Exception as exc:
            if cut and isinstance(exc, TimeoutError) and current_attempt().extend():
                raise _LoopLagged(phase) from exc
            raise self._mapped(exc, phase, timeout, label) from exc
        except BaseException:  # cancellation mid-command: the stream is in doubt
            self.abort()
            raise

    def _mapped(
        self, exc: Exception, phase: Phase, timeout: float | None, label: str
    ) -> DeliveryError | MessageError:
        """What :meth:`_guard` raises for ``exc``: the connection is dropped first when
        the reply stream is in doubt (anything but a well-formed reply)."""
        reply = isinstance(exc, smtp_errors.SMTPResponseException) and exc.code > 0
        if not reply:
            self.abort()  # the reply stream is in doubt
        elif self._smtp is None or not self._smtp.is_connected:
            self.broken = True
        return map_exception(
            exc, phase, self._settings.endpoint, timeout=timeout, timeout_name=label
        )

    async def command(
        self,
        phase: Phase,
        call: Callable[[float | None], Awaitable[_T]],
        timeout_name: str = "socket_timeout",
    ) -> _T:
        """Run one aiosmtplib call with the phase's timeout, mapping what it raises."""
        timeout, label = self._timeout(timeout_name)
        with self._guard(phase, timeout, label, cut=label is not timeout_name):
            return await call(timeout)

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
            except _LoopLagged as lagged:
                self.abort()
                self.broken = False  # a new session, not the old one reused
                _logger.debug(
                    "%s: %s timed out while the event loop was held up; setting up again",
                    self._endpoint.where,
                    lagged.phase.value,
                )
            except BaseException:
                self.abort()
                raise

    async def _open(self) -> None:
        s = self._settings
        cfg = s.config
        timeout, label = self._timeout("connection_timeout")
        with self._guard(Phase.CONNECT, timeout, label, cut=label != "connection_timeout"):
            self._sock, peer = await asyncio.wait_for(_tcp_connect(s), timeout)
        secure = cfg.implicit_tls
        wanted = cfg.debug or transcript_requested()
        transcript = self._transcript = Transcript(s.endpoint.where) if wanted else None
        client: Callable[..., aiosmtplib.SMTP] = aiosmtplib.SMTP
        if transcript is not None:
            transcript.note(f"connected to {peer}")
            client = functools.partial(TranscriptSMTP, transcript=transcript)
        smtp = client(
            hostname=cfg.tls_name if secure else cfg.host,
            sock=self._sock,
            use_tls=secure,
            start_tls=False,
            tls_context=s.tls_context if secure else None,
            local_hostname=s.ehlo_name,
            timeout=cfg.socket_timeout,
        )
        self._smtp = smtp
        # From here the socket belongs to asyncio's transport (created before any await
        # in create_connection): closing it ourselves would free its file descriptor
        # while the loop still maps it to that transport.
        self._sock = None
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

    # -- mail --------------------------------------------------------------------------

    def _take_over(self, smtp: aiosmtplib.SMTP) -> None:
        """Hand the transport from aiosmtplib to :class:`.pipeline.ReplyStream`."""
        transport = smtp.transport
        protocol = smtp.protocol
        if transport is None or protocol is None or not protocol.is_connected:
            raise ConnectionStale(f"connection to {self._settings.endpoint.where} is closed")
        if self._transcript is not None:
            self._stream = TranscriptStream.logged(
                cast(asyncio.Transport, transport), self._transcript
            )
        else:
            self._stream = ReplyStream.take_over(cast(asyncio.Transport, transport))
        self.pipelining = smtp.supports_extension("pipelining")
        self._size = smtp.supports_extension("size")
        self._smtputf8 = smtp.supports_extension("smtputf8")
        self._8bitmime = smtp.supports_extension("8bitmime")

    def _ready(self) -> ReplyStream:
        stream = self._stream
        if stream is None or not self.usable:
            raise ConnectionStale(f"connection to {self._settings.endpoint.where} is closed")
        return stream

    async def _read(self, stream: ReplyStream, phase: Phase) -> Reply:
        attempt = current_attempt()
        configured = self._settings.config.socket_timeout
        timeout = attempt.timeout(configured)
        # :meth:`_guard`, written out: this runs for every reply, and a generator-based
        # context manager per reply was a measurable share of the per-message cost.
        try:
            reply = await stream.read(timeout)
        except Exception as exc:
            reply = await self._read_again(stream, phase, exc, timeout)
        except BaseException:  # cancellation mid-read: the stream is in doubt
            self.abort()
            raise
        if phase is Phase.MAIL or phase is Phase.RCPT:
            attempt.progress()  # a long envelope is progress, not a hang
        return reply

    async def _read_again(
        self, stream: ReplyStream, phase: Phase, exc: Exception, timeout: float | None
    ) -> Reply:
        """:meth:`_read`'s failure path: the reply, when ``exc`` is a timeout that only
        the event loop's lag made (the budget it was cut to has moved on since:
        :meth:`mailer._attempt.AttemptContext.extend`), read again in the time left;
        else ``exc`` mapped. Waiting again is safe: the stream's timeout left the reply
        owed, and it will be this command's whenever it comes."""
        attempt = current_attempt()
        configured = self._settings.config.socket_timeout
        while True:
            if not (isinstance(exc, TimeoutError) and timeout != configured and attempt.extend()):
                label = "socket_timeout"
                if timeout != configured:
                    label = f"socket_timeout, cut short by {attempt.limited_by()}"
                raise self._mapped(exc, phase, timeout, label) from exc
            timeout = attempt.timeout(configured)
            try:
                return await stream.read(timeout)
            except Exception as again:
                exc = again
            except BaseException:
                self.abort()
                raise

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
        stream = self._ready()
        if smtputf8 and not self._smtputf8:  # before any byte of this transaction
            raise UnsupportedFeature(
                f"{self._endpoint.where} does not offer the SMTPUTF8 extension (RFC 6531), "
                "which this message needs for its non-ASCII address(es); nothing was sent"
            )
        body_8bit = payload_8bit is not None and (self._8bitmime or (smtputf8 and self._smtputf8))
        if body_8bit:
            assert payload_8bit is not None
            payload = payload_8bit
        pieces = (payload,) if isinstance(payload, bytes) else payload
        size = declared_size(pieces) if self._size else None
        mail = command_line(
            mail_command(
                sender, size=size, smtputf8=smtputf8, body_8bit=body_8bit and self._8bitmime
            )
        )
        previous, done = self._tail, asyncio.get_running_loop().create_future()
        self._tail = done
        self._inflight += 1
        try:
            return await self._transactions(
                stream, previous, recipients, mail, pieces, smtputf8=smtputf8
            )
        finally:
            self._inflight -= 1
            if not done.done():
                done.set_result(None)
            if self.broken and not self._inflight:
                self.abort()  # discarded while another transaction was reading
            self.last_used = time.monotonic()

    async def _transactions(
        self,
        stream: ReplyStream,
        previous: asyncio.Future[None] | None,
        recipients: list[str],
        mail: bytes,
        pieces: tuple[Piece, ...],
        *,
        smtputf8: bool = False,
    ) -> Delivery:
        """As many transactions as the server's recipient limit asks for.

        Each batch after the first is as large as the server took before its first
        "too many recipients", and must get at least one recipient accepted (a
        transaction that accepts none raises), so the loop ends.
        """
        delivered: Delivery | None = None
        remaining = recipients
        limit: int | None = None
        while True:
            batch = remaining if limit is None else remaining[:limit]
            rest = remaining[len(batch) :]
            try:
                if delivered is not None:
                    stream = self._ready()
                rcpts = [command_line(rcpt_command(r, smtputf8=smtputf8)) for r in batch]
                if self.pipelining:
                    part, deferred = await self._pipelined(
                        stream, previous, batch, mail, rcpts, pieces, more=bool(rest)
                    )
                else:
                    part, deferred = await self._one_by_one(
                        stream, batch, mail, rcpts, pieces, more=bool(rest)
                    )
            except DeliveryError as exc:
                if delivered is None:
                    raise  # nothing delivered yet: the message's outcome is this error
                _report_unsent(delivered, batch, rest, exc)
                return delivered
            previous = None  # our own replies are all read from here on
            if delivered is None:
                delivered = part
            else:
                delivered.accepted.extend(part.accepted)
                delivered.rejected.update(part.rejected)
            if deferred.taken is not None:
                taken = max(deferred.taken, 1)
                limit = taken if limit is None else min(limit, taken)
            remaining = [*deferred.deferred, *rest]
            if not remaining:
                return delivered

    async def _after(self, previous: asyncio.Future[None] | None) -> None:
        """Wait until the transaction before this one on the connection has its replies.

        Our group was written behind its payload; our replies come after its verdict.
        If we are cancelled meanwhile, our replies will never be read: the connection is
        discarded, but only once the previous transaction has its verdict (discarding it
        now would make a delivered message look uncertain).
        """
        if previous is None or previous.done():
            return
        try:
            await asyncio.shield(previous)
        except asyncio.CancelledError:
            self.discard()
            raise

    async def _mail_reply(self, stream: ReplyStream) -> Reply:
        """The reply to MAIL; a session that died before it is ConnectionStale."""
        reply = await self._before_mail(stream, Phase.MAIL)
        if reply.code == 421:
            self.abort()
            error = classify_reply(Phase.MAIL, reply.code, reply.message, self._endpoint)
            raise ConnectionStale(str(error.args[0]), code=reply.code, response=reply.message)
        self.messages += 1
        return reply

    async def _before_mail(self, stream: ReplyStream, phase: Phase) -> Reply:
        """A reply before MAIL was accepted; a dropped session is ConnectionStale."""
        try:
            return await self._read(stream, phase)
        except TransientError as exc:
            timed_out = isinstance(exc.__cause__, TimeoutError)
            if exc.code == 421 or (exc.code is None and not timed_out):
                # dropped or closing: the session failed, not this message
                raise ConnectionStale(
                    str(exc.args[0]), code=exc.code, response=exc.response
                ) from exc
            raise

    async def _pipelined(
        self,
        stream: ReplyStream,
        previous: asyncio.Future[None] | None,
        recipients: list[str],
        mail: bytes,
        rcpts: list[bytes],
        pieces: tuple[Piece, ...],
        *,
        more: bool,
    ) -> tuple[Delivery, _Recipients]:
        endpoint = self._endpoint
        rset = self._needs_rset
        self._needs_rset = False
        batch = b"".join([b"RSET\r\n" if rset else b"", mail, *rcpts, b"DATA\r\n"])
        try:
            stream.send(batch, replies=len(rcpts) + 2 + rset)
        except Exception as exc:  # closed between the pool's check and now
            self.abort()
            raise ConnectionStale(f"connection to {endpoint.where} lost before MAIL") from exc
        await self._after(previous)
        if rset:
            reply = await self._before_mail(stream, Phase.RSET)
            if reply.code != 250:  # the server's state is unknown: start afresh
                self.abort()
                raise ConnectionStale(
                    f"RSET refused by {endpoint.where}: {reply.code} {reply.message}",
                    code=reply.code,
                    response=reply.message,
                )
        mail_reply = await self._mail_reply(stream)
        if mail_reply.code != 250:
            error = classify_reply(Phase.MAIL, mail_reply.code, mail_reply.message, endpoint)
            # Every RCPT and DATA is answered too (503 "need MAIL"): read them all.
            await self._wind_up(stream, rcpts=len(rcpts))
            raise error
        rcpt = _Recipients()
        for address in recipients:
            self._sort_rcpt(rcpt, address, await self._read(stream, Phase.RCPT))
        if not rcpt.accepted:
            none_accepted = classify_recipients(rcpt.accepted, rcpt.all_refused())
            assert none_accepted is not None
            await self._wind_up(stream, rcpts=0)
            raise none_accepted
        data_reply = await self._read(stream, Phase.DATA)
        if data_reply.code != 354:
            if data_reply.code == 421:
                self.abort()
            else:
                self._needs_rset = True
            raise classify_reply(Phase.DATA, data_reply.code, data_reply.message, endpoint)
        last = not more and not rcpt.deferred
        return await self._message(stream, rcpt, pieces, last=last), rcpt

    def _sort_rcpt(self, rcpt: _Recipients, address: str, reply: Reply) -> None:
        """File one RCPT reply: accepted, deferred to the next transaction, or refused."""
        if reply.code in (250, 251):
            rcpt.accepted.append(address)
        elif reply.code == 421:  # the server hangs up: nothing more will come
            self.abort()
            raise classify_reply(Phase.RCPT, reply.code, reply.message, self._endpoint)
        elif too_many_recipients(reply.code, reply.message):
            if rcpt.taken is None:
                rcpt.taken = len(rcpt.accepted) + len(rcpt.refused)
            rcpt.deferred[address] = (reply.code, reply.message)
        else:
            rcpt.refused[address] = (reply.code, reply.message)

    async def _wind_up(self, stream: ReplyStream, *, rcpts: int) -> None:
        """After a refusal in a pipelined group: read what is still owed, then RSET.

        ``rcpts`` RCPT replies and the DATA reply are still owed. RFC 2920: the DATA
        reply must be checked even when nothing was accepted; if it is 354 anyway, a
        lone "." ends the (empty, recipient-less) data, and its reply is read too. The
        RSET goes in front of the next MAIL. The caller's error is what counts: a
        failure here only means the connection is discarded.
        """
        try:
            for _ in range(rcpts):
                reply = await self._read(stream, Phase.RCPT)
                if reply.code == 421:
                    self.abort()
                    return
            reply = await self._read(stream, Phase.DATA)
            if reply.code == 354:
                with self._guard(Phase.DATA, None, "socket_timeout"):
                    stream.send(b".\r\n", replies=1)
                reply = await self._read(stream, Phase.DATA)
            if reply.code == 421:
                self.abort()
                return
            self._needs_rset = True
        except DeliveryError:
            pass  # the guard has discarded the connection

    async def _one_by_one(
        self,
        stream: ReplyStream,
        recipients: list[str],
        mail: bytes,
        rcpts: list[bytes],
        pieces: tuple[Piece, ...],
        *,
        more: bool,
    ) -> tuple[Delivery, _Recipients]:
        endpoint = self._endpoint
        try:
            stream.send(mail, replies=1)
        except Exception as exc:
            self.abort()
            raise ConnectionStale(f"connection to {endpoint.where} lost before MAIL") from exc
        reply = await self._mail_reply(stream)
        if reply.code != 250:
            raise classify_reply(Phase.MAIL, reply.code, reply.message, endpoint)
        try:
            rcpt = _Recipients()
            for index, (address, line) in enumerate(zip(recipients, rcpts, strict=True)):
                with self._guard(Phase.RCPT, None, "socket_timeout"):
                    stream.send(line, replies=1)
                reply = await self._read(stream, Phase.RCPT)
                self._sort_rcpt(rcpt, address, reply)
                if rcpt.deferred:
                    # The server takes no more in this transaction: the rest wait for the
                    # next one, without asking (each would get the same answer).
                    for later in recipients[index + 1 :]:
                        rcpt.deferred[later] = (reply.code, reply.message)
                    break
            error = classify_recipients(rcpt.accepted, rcpt.all_refused())
            if error is not None:
                raise error
            with self._guard(Phase.DATA, None, "socket_timeout"):
                stream.send(b"DATA\r\n", replies=1)
            reply = await self._read(stream, Phase.DATA)
            if reply.code != 354:
                if reply.code == 421:
                    self.abort()
                raise classify_reply(Phase.DATA, reply.code, reply.message, endpoint)
            last = not more and not rcpt.deferred
            return await self._message(stream, rcpt, pieces, last=last), rcpt
        except DeliveryError:
            if self.usable:
                await self._rset()
            raise

    async def _message(
        self, stream: ReplyStream, rcpt: _Recipients, pieces: tuple[Piece, ...], *, last: bool
    ) -> Delivery:
        """The payload after 354, then the verdict.

        ``last``: no transaction of this message follows, so the next send may be
        pipelined behind our payload (a hand-off); before a further transaction of our
        own, the connection stays ours.
        """
        # The commit point: from the end of the data on, the server may have the message.
        # Marked before the payload (not just before its last chunk) so that the budget
        # never cuts a payload short that is already on its way.
        await current_attempt().commit()
        timeout, label = self._timeout("socket_timeout")
        handoff = self.on_handoff if last and self.pipelining else None
        # Until the final "." is written nothing can be delivered: a failure is transient.
        with self._guard(Phase.DATA, timeout, label):
            try:
                # With a hand-off, a small payload is held for the rest of this loop turn
                # so that the next message's group, written in it, leaves in one write.
                await stream.send_payload(pieces, timeout=timeout, hold=handoff is not None)
            except MessageError:
                # an attachment file changed mid-payload: the data cannot be ended
                # (that would deliver a truncated message), so the session goes
                self.abort()
                raise
        if last:
            self.on_handoff = None
            try:
                if handoff is not None:
                    handoff()  # the next message's group may follow our "." now
            finally:
                stream.flush_soon()  # after the next send's wake-up, which comes first
        reply = await self._read(stream, Phase.MESSAGE)
        if reply.code != 250:
            if reply.code == 421:
                self.abort()
            raise classify_reply(Phase.MESSAGE, reply.code, reply.message, self._endpoint)
        rejected = {a: _reply_text(code, text) for a, (code, text) in rcpt.refused.items()}
        return Delivery(accepted=list(rcpt.accepted), rejected=rejected, response=reply.message)

    async def _rset(self) -> None:
        """End a failed transaction so the connection can carry the next one."""
        stream = self._stream
        timeout = min(self._settings.config.socket_timeout, _COURTESY_TIMEOUT)
        try:
            assert stream is not None
            with self._guard(Phase.RSET, timeout, "socket_timeout"):
                stream.send(b"RSET\r\n", replies=1)
                reply = await stream.read(timeout)
            if reply.code != 250:
                self.abort()
        except DeliveryError:
            self.abort()

    async def quit(self) -> None:
        """Say goodbye politely, then close whatever happens."""
        smtp = self._smtp
        stream = self._stream
        timeout = min(self._settings.config.socket_timeout, _COURTESY_TIMEOUT)
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
        return f"<Connection {self._settings.endpoint.where} {state} messages={self.messages}>"


def _report_unsent(
    delivered: Delivery, batch: list[str], rest: list[str], error: DeliveryError
) -> None:
    """A later transaction failed after an earlier one delivered: say so per recipient.

    The message is not failed (it reached ``delivered.accepted``), so each recipient of
    the failed transaction (``batch``) and of those not tried (``rest``) is put in
    ``rejected`` with what happened to it: its own RCPT reply when the server refused
    it, "it may have been delivered" when the transaction ended without a verdict, else
    why it was not sent.
    """
    replies: dict[str, str] = getattr(error, "refused", {})
    detail = error.args[0] if error.args else type(error).__name__
    count = len(delivered.accepted)
    if isinstance(error, DeliveryUncertain):
        reason = (
            f"uncertain, it may have been delivered: {detail} (in a later transaction of "
            f"a message delivered to {count} other recipient(s))"
        )
    else:
        reason = (
            f"not sent: {detail} (in a later transaction, after the message was "
            f"delivered to {count} other recipient(s))"
        )
    for address in batch:
        delivered.rejected[address] = replies.get(address, reason)
    for address in rest:
        delivered.rejected[address] = (
            f"not sent: not tried after a later transaction failed ({detail}); the "
            f"message was delivered to {count} other recipient(s)"
        )
