"""The SMTP provider: Nodemailer's SMTP transport, with failures classified for failover.

asyncio only: aiosmtplib is built on asyncio, so this provider is too (the rest of the
library uses anyio, and the HTTP providers also run under trio). Under another loop the
provider refuses with a ConfigError before any I/O (:meth:`SMTPProvider._require_asyncio`):
left to run, it would fail at its first asyncio call and report a connect failure, or
worse DeliveryUncertain, although nothing had left the process.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from pydantic import ValidationError

from ..._attempt import current_attempt
from ..._backend import current_async_library
from ..._errors import ConfigError, DeliveryError, MessageError
from ..._message import Message
from ..._message.dkim import choose, sign
from ..._options import validation_text
from ..._provider import Provider, deep_merge
from ..._result import SendResult
from ._proxy import require_library
from .classify import Endpoint
from .config import SMTPConfig, config_from_url
from .connection import Connection, Delivery, Settings
from .oauth import TokenSource
from .pool import Pool
from .tls import build_context
from .wire import Piece, check_envelope_address, message_payload, payload_8bit

if TYPE_CHECKING:
    import httpx

__all__ = ["SMTPProvider"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})$")


def _default_ehlo_name() -> str:
    """This machine's name, when it is usable in EHLO (Nodemailer uses os.hostname())."""
    name = socket.gethostname()
    return name if _HOSTNAME.fullmatch(name) else "localhost"


class SMTPProvider(Provider[SMTPConfig]):
    """Send through an SMTP server (``type = "smtp"`` or ``"smtps"``)."""

    Config = SMTPConfig
    #: the commit point is the end of the data (:func:`._exchange._message`)
    reports_commit_point = True

    def __init__(self, name: str, config: SMTPConfig | None = None) -> None:
        super().__init__(name, config)
        cfg = self.config
        self._cfg = cfg
        self._http: httpx.AsyncClient | None = None
        oauth2 = cfg.auth.oauth2 if cfg.auth is not None else None
        if oauth2 is not None and oauth2.endpoint is not None:
            # httpx (and through it click, rich and pygments: 100-170 ms) only for a token
            # endpoint, and now rather than at the first token fetch, inside a send
            import httpx  # noqa: F401
        #: the shared XOAUTH2 token cache (None without oauth2)
        self.tokens = TokenSource(oauth2, client=self._http_client) if oauth2 else None
        proxy = cfg.proxy_url
        if proxy is not None:
            try:
                require_library(proxy)
            except ImportError as exc:
                raise ConfigError(f"provider {name!r}: {exc}") from None
        self._settings = Settings(
            config=cfg,
            endpoint=Endpoint(
                host=cfg.host,
                port=cfg.port_number,
                secure=cfg.implicit_tls,
                tls_name=cfg.tls_name,
                via=proxy.shown if proxy is not None else None,
            ),
            tls_context=build_context(cfg.tls),
            ehlo_name=cfg.name or _default_ehlo_name(),
            tokens=self.tokens,
            proxy=proxy,
        )
        self._pool: Pool | None = None

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        return config_from_url(url, params)

    # -- connections -------------------------------------------------------------------

    async def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient()
        return self._http

    async def connect(self) -> Connection:
        """A new, ready session (greeted, encrypted as configured, authenticated)."""
        conn = Connection(self._settings)
        await conn.open()
        return conn

    @property
    def pool(self) -> Pool | None:
        """The connection pool, once the first pooled send made it."""
        return self._pool

    @property
    def concurrency(self) -> int | None:
        """The pool's connections; None unpooled (a connection per send, unbounded)."""
        return self._cfg.max_connections if self._cfg.pool else None

    def _get_pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(
                self.connect,
                max_connections=self._cfg.max_connections,
                max_messages=self._cfg.max_messages,
                idle_timeout=self._cfg.idle_timeout,
            )
        return self._pool

    # -- the interface -----------------------------------------------------------------

    def _require_asyncio(self) -> None:
        """Refuse, before any I/O, to run under an event loop other than asyncio."""
        library = current_async_library()
        if library != "asyncio":
            raise ConfigError(
                f"the SMTP provider {self.name!r} runs on asyncio only (aiosmtplib), but "
                f"this code runs under {library or 'no event loop'}: run the Mailer on "
                "asyncio (anyio.run(main, backend='asyncio'), or use SyncMailer), or send "
                "through an HTTP provider, which also runs under trio"
            )

    async def _send(self, message: Message) -> SendResult:
        self._require_asyncio()
        utf8 = message.smtputf8
        sender = check_envelope_address(message.envelope_sender, "envelope sender", utf8=utf8)
        recipients = [
            check_envelope_address(r, "envelope recipient", utf8=utf8)
            for r in message.envelope_recipients
        ]
        payload = message_payload(message)  # encoded once per message, not per attempt
        dkim = choose(message, self._cfg.dkim)
        if dkim is not None:  # made once per message too: a header line in front
            payload = (await sign(message, dkim), *payload)
        # an 8-bit attached message as it is, for a server that takes 8-bit data (the
        # signature covers the 7-bit rendering only: a signed message is sent 7-bit)
        eight_bit = payload_8bit(message) if dkim is None else None

        job = _Transaction(sender, recipients, payload, utf8, eight_bit)
        current_attempt().prepare()  # the outbox's commit record starts now (_attempt)
        options = self.options_for(message)
        if options:
            # Per-message overrides (another auth, another host...): a one-off
            # connection with the merged config, never the shared pool, whose sessions
            # were set up with the provider's own.
            one_off = SMTPProvider(self.name, self._merged(options))
            try:
                delivery = await one_off._run(job, pooled=False)
            finally:
                await one_off.aclose()
        else:
            delivery = await self._run(job, pooled=self._cfg.pool)
        return SendResult(
            provider=self.name,
            message_id=message.message_id,
            accepted=delivery.accepted,
            rejected=delivery.rejected,
            response=delivery.response,
        )

    async def _run(self, job: _Transaction, *, pooled: bool) -> Delivery:
        if pooled:
            return await self._get_pool().run(job)
        conn = await self.connect()
        try:
            return await job(conn)
        finally:
            await conn.quit()

    def _merged(self, options: dict[str, Any]) -> SMTPConfig:
        """This provider's config with a message's overrides, or a MessageError."""
        base = self._cfg.model_dump(exclude_unset=True)
        try:
            return SMTPConfig.model_validate(deep_merge(base, options))
        except ValidationError as exc:
            text = validation_text(f"config for provider {self.name!r}", exc, SMTPConfig)
        except ConfigError as exc:
            text = str(exc)
        raise MessageError(f"provider_options for {self.name!r} cannot apply: {text}")

    def check_options(self, options: dict[str, Any]) -> None:
        self._merged(options)

    async def verify(self) -> None:
        """Connect, TLS, EHLO, AUTH, QUIT: raise the classified error if any step fails."""
        self._require_asyncio()
        try:
            conn = await self.connect()
        except DeliveryError as exc:
            if exc.provider is None:
                exc.provider = self.name
            raise
        await conn.quit()

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def __repr__(self) -> str:
        where = self._settings.endpoint.where
        mode = "smtps" if self._cfg.implicit_tls else "smtp"
        return f"<SMTPProvider name={self.name!r} {mode}://{where} pool={self._cfg.pool}>"


class _Transaction:
    """One message's transaction, run on whichever connection the pool hands out.

    A slotted object rather than a closure: a send queued for a pooled connection holds
    it while it waits, and a closure with its cells is seven objects for the collector to
    walk per queued send instead of one.
    """

    __slots__ = ("eight_bit", "payload", "recipients", "sender", "utf8")

    def __init__(
        self,
        sender: str,
        recipients: list[str],
        payload: tuple[Piece, ...],
        utf8: bool,
        eight_bit: tuple[Piece, ...] | None,
    ) -> None:
        self.sender = sender
        self.recipients = recipients
        self.payload = payload
        self.utf8 = utf8
        self.eight_bit = eight_bit

    def __call__(self, conn: Connection) -> Awaitable[Delivery]:
        return conn.transaction(
            self.sender,
            self.recipients,
            self.payload,
            smtputf8=self.utf8,
            payload_8bit=self.eight_bit,
        )
