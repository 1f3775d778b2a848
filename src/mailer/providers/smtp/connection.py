"""One SMTP session: connect, TLS, EHLO, AUTH, transactions, QUIT.

This is the only module that touches aiosmtplib, and :meth:`Connection._guard` is the
only place its exceptions (and ssl's, and OSError) are turned into the error tree, via
:func:`.classify.map_exception`.

A connection whose reply stream is in doubt (a timeout or a cancellation while a command
was outstanding, a reply we could not parse) is marked broken and closed at once: a late
reply would otherwise be read as the answer to the next command, which can make a
refused message look accepted.

:meth:`Connection.transaction` is the whole MAIL/RCPT/DATA exchange in one method, so
that an RFC 2920 PIPELINING implementation can replace it without touching the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib import errors as smtp_errors

from ...errors import AuthError, DeliveryError, MessageError, TransientError
from ...provider import deadline_remaining
from .classify import Endpoint, Phase, classify_recipients, classify_reply, map_exception
from .config import SMTPConfig
from .oauth import TokenSource
from .wire import mail_command, rcpt_command

__all__ = ["Connection", "ConnectionStale", "Delivery", "Settings"]

_T = TypeVar("_T")

#: QUIT and RSET are courtesy; never wait long for them.
_COURTESY_TIMEOUT = 5.0


class ConnectionStale(TransientError):
    """The connection failed before MAIL was accepted: nothing of this message was sent.

    On a reused pooled connection this usually means the server dropped it while it sat
    idle, so the pool retries once on a new connection instead of failing the message.
    Being a TransientError, it is also the right thing for a caller to see.
    """


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a connection needs, built once per provider."""

    config: SMTPConfig
    endpoint: Endpoint
    tls_context: ssl.SSLContext
    ehlo_name: str
    tokens: TokenSource | None = None


@dataclass(slots=True)
class Delivery:
    """What the server said about one transaction that was accepted."""

    accepted: list[str]
    rejected: dict[str, str] = field(default_factory=dict)
    response: str = ""


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket, so the TLS name can differ from ``host``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    raise last or OSError(f"no address for {host!r}")


class Connection:
    """One session with the server; used by one task at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._smtp: aiosmtplib.SMTP | None = None
        self._sock: socket.socket | None = None
        #: transactions completed on this connection (for max_messages)
        self.messages = 0
        self.last_used = time.monotonic()
        #: set when the reply stream is in doubt; a broken connection is never reused
        self.broken = False
        #: whether the session is encrypted (implicit TLS or STARTTLS)
        self.encrypted = False

    # -- state -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.broken and self._smtp is not None and self._smtp.is_connected

    @property
    def smtp(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            raise ConnectionStale(f"connection to {self._settings.endpoint.where} is closed")
        return self._smtp

    def abort(self) -> None:
        """Close at once, without QUIT (for a broken or half-open session)."""
        self.broken = True
        if self._smtp is not None:
            self._smtp.close()
        if self._sock is not None:
            self._sock.close()

    # -- the exception boundary --------------------------------------------------------

    def _timeout(self, name: str) -> tuple[float | None, str]:
        configured: float = getattr(self._settings.config, name)
        value = deadline_remaining(configured)
        label = name if value == configured else f"{name}, cut short by the send deadline"
        return value, label

    @contextlib.contextmanager
    def _guard(self, phase: Phase, timeout: float | None, label: str) -> Iterator[None]:
        try:
            yield
        except (DeliveryError, MessageError):
            raise
        except Exception as exc:
            reply = isinstance(exc, smtp_errors.SMTPResponseException) and exc.code > 0
            if not reply:
                self.abort()  # the reply stream is in doubt
            elif self._smtp is None or not self._smtp.is_connected:
                self.broken = True
            error = map_exception(
                exc, phase, self._settings.endpoint, timeout=timeout, timeout_name=label
            )
            raise error from exc
        except BaseException:  # cancellation mid-command: the stream is in doubt
            self.abort()
            raise

    async def command(
        self,
        phase: Phase,
        call: Callable[[float | None], Awaitable[_T]],
        timeout_name: str = "socket_timeout",
    ) -> _T:
        """Run one aiosmtplib call with the phase's timeout, mapping what it raises."""
        timeout, label = self._timeout(timeout_name)
        with self._guard(phase, timeout, label):
            return await call(timeout)

    # -- session setup -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, (implicit TLS), greeting, EHLO, (STARTTLS, EHLO), (AUTH)."""
        try:
            await self._open()
        except BaseException:
            self.abort()
            raise

    async def _open(self) -> None:
        s = self._settings
        cfg = s.config
        timeout, label = self._timeout("connection_timeout")
        with self._guard(Phase.CONNECT, timeout, label):
            self._sock = await asyncio.wait_for(_tcp_connect(cfg.host, cfg.port_number), timeout)
        secure = cfg.implicit_tls
        smtp = aiosmtplib.SMTP(
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
                    f"require_tls is set but {s.endpoint.where} does not offer STARTTLS"
                )
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

    async def transaction(self, sender: str, recipients: list[str], payload: bytes) -> Delivery:
        """MAIL, RCPT for each recipient, DATA, payload; the server's verdict.

        ``payload`` is already encoded (:func:`.wire.encode_data`): CRLF, dot-stuffed,
        terminated. Raises ConnectionStale when the session failed before MAIL was
        accepted, so that nothing of this message left.
        """
        smtp = self.smtp
        size = len(payload) if smtp.supports_extension("size") else None
        mail = mail_command(sender, size=size)
        rcpts = [rcpt_command(r) for r in recipients]
        try:
            reply = await self.command(Phase.MAIL, lambda t: smtp.execute_command(*mail, timeout=t))
        except TransientError as exc:
            timed_out = isinstance(exc.__cause__, TimeoutError)
            if exc.code == 421 or (exc.code is None and not timed_out):
                # dropped or closing: the session failed, not this message
                raise ConnectionStale(
                    str(exc.args[0]), code=exc.code, response=exc.response
                ) from exc
            raise
        if reply.code != 250:
            if reply.code == 421:
                raise ConnectionStale(
                    str(classify_reply(Phase.MAIL, reply.code, reply.message,
                                       self._settings.endpoint).args[0]),
                    code=reply.code,
                    response=reply.message,
                )  # fmt: skip
            self.messages += 1
            raise classify_reply(Phase.MAIL, reply.code, reply.message, self._settings.endpoint)
        self.messages += 1
        try:
            return await self._after_mail(smtp, recipients, rcpts, payload)
        except DeliveryError:
            if self.usable:
                await self._rset(smtp)
            raise
        finally:
            self.last_used = time.monotonic()

    async def _after_mail(
        self,
        smtp: aiosmtplib.SMTP,
        recipients: list[str],
        rcpts: list[tuple[bytes, ...]],
        payload: bytes,
    ) -> Delivery:
        endpoint = self._settings.endpoint
        accepted: list[str] = []
        refused: dict[str, tuple[int, str]] = {}
        for address, args in zip(recipients, rcpts, strict=True):

            async def rcpt(timeout: float | None, a: tuple[bytes, ...] = args) -> SMTPResponse:
                return await smtp.execute_command(*a, timeout=timeout)

            reply = await self.command(Phase.RCPT, rcpt)
            if reply.code in (250, 251):
                accepted.append(address)
            elif reply.code == 421:
                raise classify_reply(Phase.RCPT, reply.code, reply.message, endpoint)
            else:
                refused[address] = (reply.code, reply.message)
        error = classify_recipients(accepted, refused)
        if error is not None:
            raise error
        reply = await self.command(Phase.DATA, lambda t: smtp.execute_command(b"DATA", timeout=t))
        if reply.code != 354:
            raise classify_reply(Phase.DATA, reply.code, reply.message, endpoint)
        protocol = smtp.protocol
        if protocol is None or not protocol.is_connected:
            self.abort()
            raise TransientError(f"connection to {endpoint.where} lost at DATA")

        async def send_payload(timeout: float | None) -> SMTPResponse:
            protocol.write(payload)
            return await protocol.read_response(timeout=timeout)

        reply = await self.command(Phase.MESSAGE, send_payload)
        if reply.code != 250:
            raise classify_reply(Phase.MESSAGE, reply.code, reply.message, endpoint)
        rejected = {a: f"{code} {text}".strip() for a, (code, text) in refused.items()}
        return Delivery(accepted=accepted, rejected=rejected, response=reply.message)

    async def _rset(self, smtp: aiosmtplib.SMTP) -> None:
        """End a failed transaction so the connection can carry the next one."""
        timeout = min(self._settings.config.socket_timeout, _COURTESY_TIMEOUT)
        try:
            with self._guard(Phase.RSET, timeout, "socket_timeout"):
                reply = await smtp.execute_command(b"RSET", timeout=timeout)
            if reply.code != 250:
                self.abort()
        except DeliveryError:
            self.abort()

    async def quit(self) -> None:
        """Say goodbye politely, then close whatever happens."""
        smtp = self._smtp
        try:
            if smtp is not None and smtp.is_connected and not self.broken:
                timeout = min(self._settings.config.socket_timeout, _COURTESY_TIMEOUT)
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=timeout)
        finally:
            self.abort()

    def __repr__(self) -> str:
        state = "usable" if self.usable else "closed"
        return f"<Connection {self._settings.endpoint.where} {state} messages={self.messages}>"
