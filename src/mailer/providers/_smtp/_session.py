"""What one SMTP session is made of: its state, its one exception boundary, its replies.

:class:`Session` is the base of :class:`.connection.Connection`; the set-up
(:mod:`._setup`) and the mail transactions (:mod:`._exchange`) work on it. This is the
only place where aiosmtplib's exceptions (and ssl's, and OSError) are turned into the
error tree, via :func:`.classify.map_exception`: :meth:`Session.guard` for a command,
:meth:`Session.read` for a reply.

A session whose reply stream is in doubt (a timeout or a cancellation while a command was
outstanding, a reply we could not parse) is marked broken and closed at once: a late
reply would otherwise be read as the answer to the next command, which can make a refused
message look accepted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import aiosmtplib
from aiosmtplib import errors as smtp_errors

from ..._attempt import current_attempt
from ..._errors import DeliveryError, MessageError, TransientError
from ._proxy import ProxyURL
from ._transcript import Transcript
from .classify import Endpoint, Phase, map_exception
from .config import SMTPConfig
from .oauth import TokenSource
from .pipeline import Reply, ReplyStream

__all__ = ["COURTESY_TIMEOUT", "ConnectionStale", "LoopLagged", "Session", "Settings"]

_T = TypeVar("_T")

#: QUIT and RSET are courtesy; never wait long for them.
COURTESY_TIMEOUT = 5.0


class ConnectionStale(TransientError):
    """The connection failed before MAIL was accepted: nothing of this message was sent.

    On a reused pooled connection this usually means the server dropped it while it sat
    idle, so the pool retries once on a new connection instead of failing the message.
    Being a TransientError, it is also the right thing for a caller to see.
    """


class LoopLagged(Exception):
    """A set-up step timed out only because this process's event loop was held up: not
    the server's failure (see :meth:`.connection.Connection.open`, which sets up again).
    Never leaves the connection."""

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


class Session:
    """One session's state; used by one task at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self.smtp_client: aiosmtplib.SMTP | None = None
        #: the connected socket until aiosmtplib's transport owns it
        self.sock: socket.socket | None = None
        #: the DEBUG transcript (``debug``), else None
        self.transcript: Transcript | None = None
        #: transactions completed on this connection (for max_messages)
        self.messages = 0
        self.last_used = time.monotonic()
        #: set when the reply stream is in doubt; a broken connection is never reused
        self.broken = False
        #: whether the session is encrypted (implicit TLS or STARTTLS)
        self.encrypted = False
        #: whether the server offers PIPELINING (RFC 2920): one write per transaction
        self.pipelining = False
        #: the server's SIZE, SMTPUTF8 and 8BITMIME extensions
        self.size = False
        self.smtputf8 = False
        self.eightbitmime = False
        #: the mail-transaction layer, once the session is set up
        self.stream: ReplyStream | None = None
        #: a failed pipelined transaction's RSET, sent in front of the next MAIL
        self.needs_rset = False
        #: transactions under way (two when the next one rides with a payload)
        self.inflight = 0
        #: set by the pool for one transaction: called once its final "." is written, so
        #: the next message's MAIL/RCPT/DATA can follow it in the same round trip
        self.on_handoff: Callable[[], None] | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, and nothing unread or unexpected on it: fit for the next transaction."""
        if self.broken:
            return False
        stream = self.stream
        if stream is not None:
            if self.inflight:  # a transaction that will read what is owed
                return stream.connected and not stream.unsolicited
            return stream.idle
        return self.smtp_client is not None and self.smtp_client.is_connected

    @property
    def busy(self) -> bool:
        """A transaction is under way on this connection."""
        return self.inflight > 0

    @property
    def holding(self) -> bool:
        """A handed-off payload is held for the rest of this loop turn: a group written
        now leaves in the same ``send()`` (:meth:`ReplyStream.flush_soon`)."""
        stream = self.stream
        return stream is not None and stream.holding

    @property
    def smtp(self) -> aiosmtplib.SMTP:
        if self.smtp_client is None or not self.smtp_client.is_connected:
            raise ConnectionStale(f"connection to {self.endpoint.where} is closed")
        return self.smtp_client

    def ready(self) -> ReplyStream:
        """The transaction layer, when the session can carry a transaction now."""
        stream = self.stream
        if stream is None or not self.usable:
            raise ConnectionStale(f"connection to {self.endpoint.where} is closed")
        return stream

    def discard(self) -> None:
        """Never reuse; close now, or once the transaction under way has its verdict."""
        self.broken = True
        if not self.inflight:
            self.abort()

    def abort(self) -> None:
        """Close at once, without QUIT (for a broken or half-open session)."""
        self.broken = True
        if self.stream is not None:
            self.stream.close()
        if self.smtp_client is not None:
            self.smtp_client.close()
        if self.sock is not None:
            self.sock.close()

    # -- the exception boundary --------------------------------------------------------

    def timeout(self, name: str) -> tuple[float | None, str]:
        """The step's timeout (``name``, cut to the attempt's limit) and its label; the
        label is ``name`` itself (the same object) when nothing cut it short."""
        configured: float = getattr(self.settings.config, name)
        attempt = current_attempt()
        value = attempt.timeout(configured)
        if value == configured:
            return value, name
        return value, f"{name}, cut short by {attempt.limited_by()}"

    @contextlib.contextmanager
    def guard(
        self, phase: Phase, timeout: float | None, label: str, *, cut: bool = False
    ) -> Iterator[None]:
        """Map what the step raises. ``cut``: its timeout was cut short by the attempt;
        a set-up step whose timer fired while this process's event loop was held up
        raises :class:`LoopLagged` instead, for the connection to set up again."""
        try:
            yield
        except (DeliveryError, MessageError):
            raise
        except Exception as exc:
            if cut and isinstance(exc, TimeoutError) and current_attempt().extend():
                raise LoopLagged(phase) from exc
            raise self.mapped(exc, phase, timeout, label) from exc
        except BaseException:  # cancellation mid-command: the stream is in doubt
            self.abort()
            raise

    def mapped(
        self, exc: Exception, phase: Phase, timeout: float | None, label: str
    ) -> DeliveryError | MessageError:
        """What :meth:`guard` raises for ``exc``: the connection is dropped first when
        the reply stream is in doubt (anything but a well-formed reply)."""
        reply = isinstance(exc, smtp_errors.SMTPResponseException) and exc.code > 0
        if not reply:
            self.abort()  # the reply stream is in doubt
        elif self.smtp_client is None or not self.smtp_client.is_connected:
            self.broken = True
        return map_exception(exc, phase, self.endpoint, timeout=timeout, timeout_name=label)

    async def command(
        self,
        phase: Phase,
        call: Callable[[float | None], Awaitable[_T]],
        timeout_name: str = "socket_timeout",
    ) -> _T:
        """Run one aiosmtplib call with the phase's timeout, mapping what it raises."""
        timeout, label = self.timeout(timeout_name)
        with self.guard(phase, timeout, label, cut=label is not timeout_name):
            return await call(timeout)

    # -- replies -----------------------------------------------------------------------

    async def read(self, stream: ReplyStream, phase: Phase) -> Reply:
        """The next reply, within ``socket_timeout`` cut to the attempt's limit."""
        attempt = current_attempt()
        reply = stream.take()  # already here (most of a pipelined group's): no wait
        if reply is None:
            configured = self.settings.config.socket_timeout
            timeout = attempt.timeout(configured)
            # :meth:`guard`, written out: this runs for every reply, and a generator-based
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
        """:meth:`read`'s failure path: the reply, when ``exc`` is a timeout that only
        the event loop's lag made (the budget it was cut to has moved on since:
        :meth:`mailer._attempt.AttemptContext.extend`), read again in the time left;
        else ``exc`` mapped. Waiting again is safe: the stream's timeout left the reply
        owed, and it will be this command's whenever it comes."""
        attempt = current_attempt()
        configured = self.settings.config.socket_timeout
        waited = timeout  # what the error reports: every read's wait, not the last one's
        while True:
            if not (isinstance(exc, TimeoutError) and timeout != configured and attempt.extend()):
                label = "socket_timeout"
                if timeout != configured:
                    label = f"socket_timeout, cut short by {attempt.limited_by()}"
                raise self.mapped(exc, phase, waited, label) from exc
            timeout = attempt.timeout(configured)
            if waited is not None and timeout is not None:
                waited += timeout
            try:
                return await stream.read(timeout)
            except Exception as again:
                exc = again
            except BaseException:
                self.abort()
                raise
