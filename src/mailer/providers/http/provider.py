"""The base class of the HTTP API providers: an adapter says what differs, the base does
the rest.

An adapter (SendGrid, Mailgun, ...) is a :class:`HTTPProvider` subclass declaring its
endpoint, credential and limits, with a :class:`~.payload.Payload` subclass that maps a
Message to its request, and, where its API reports errors its own way,
:meth:`HTTPProvider.classify_error`. The transport (:mod:`.transport`) sends, the
responses module (:mod:`.responses`) reads, the batch module (:mod:`.batch`) groups.

Secrets: the config's secrets are registered with :mod:`mailer._redact` when the provider
is made, and every text an API sends back is redacted before it is put on an error, in
case a provider echoes a credential back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from email.utils import getaddresses
from typing import Any, ClassVar, TypeVar
from urllib.parse import SplitResult

import httpx
from pydantic import BaseModel

from ..._errors import DeliveryError, DeliveryUncertain, MessageError, UnsupportedFeature
from ..._message import Message
from ..._message.dkim import DKIMOptions, choose, sign
from ..._provider import Provider
from ..._redact import redact, register_config
from ..._result import SendResult
from .._coalesce import Coalescer, batching
from . import batch
from .config import HTTPConfig, key_config, url_base, url_credentials
from .lookup import Lookup
from .payload import Payload
from .responses import MAX_BODY, Answer, error_text, parse_retry_after, status_error
from .transport import HTTPRequest, Transport, register_auth
from .webhook import WebhookParser

__all__ = ["HTTPProvider"]

logger = logging.getLogger("mailer.providers.http")

#: the adapter's config model; ``self.config`` is one
ConfigT = TypeVar("ConfigT", bound=HTTPConfig)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class HTTPProvider(Provider[ConfigT]):
    """Base class for providers that send through an HTTP API, the django-anymail way.

    Everything that decides *whether the Mailer may fail over* lives in the base: the
    transport's mapping of network failures and :meth:`error_for`'s of statuses; adapters
    refine it with :meth:`classify_error`.
    """

    Config: ClassVar[type[BaseModel]] = HTTPConfig
    #: the Payload subclass that maps a Message to this API's request
    payload_class: ClassVar[type[Payload[Any]]] = Payload
    #: the ESP's webhook receiver (verify and parse); its config is the ``webhook``
    #: block of ``Config`` (docs/events.md). None: the ESP posts no events we read
    webhook_parser: ClassVar[type[WebhookParser[Any]] | None] = None
    #: the request body leaves in the transport, which awaits the commit point first
    reports_commit_point = True

    #: the API's public base URL, used when the config has no ``base_url``
    default_base_url: ClassVar[str] = ""
    #: ``POST`` target of a send, relative to the base URL (or override :meth:`send_target`)
    send_path: ClassVar[str] = ""
    #: a cheap authenticated GET that :meth:`verify` calls, relative to the base URL
    verify_path: ClassVar[str | None] = None
    #: provider headers giving the rate-limit reset (delay or timestamp), after Retry-After
    rate_limit_reset_headers: ClassVar[tuple[str, ...]] = ()
    #: for single-secret APIs: the config field a ``type://SECRET@default`` DSN fills,
    #: and that :attr:`key_header` carries
    dsn_key_field: ClassVar[str | None] = None
    #: the request header carrying the ``dsn_key_field`` secret, and its prefix
    key_header: ClassVar[str | None] = None
    key_prefix: ClassVar[str] = ""
    #: the JSON field of a 2xx answer holding the provider's message id
    response_id_field: ClassVar[str | None] = None
    #: whether the Message-ID goes out as a header (False: the API sets its own)
    sends_message_id: ClassVar[bool] = True
    #: False when the API accepts a message without To (Bcc-only); else it is refused
    requires_to: ClassVar[bool] = True
    #: False when the API takes only 7-bit ASCII local parts: a message that needs
    #: SMTPUTF8 (:attr:`Message.smtputf8`) is refused before any I/O
    smtputf8: ClassVar[bool] = True
    #: the API's size limit for one message, in bytes as sent (attachments base64-encoded,
    #: which the rendered MIME measures closely); 0: none known. A larger message is
    #: refused before any I/O, so the Mailer moves it on instead of the API rejecting it
    max_message_bytes: ClassVar[int] = 0
    #: messages per batch request (0: no batch endpoint; :meth:`send_batch` sends each)
    batch_size: ClassVar[int] = 0
    #: the size limit of one batch request in bytes (0: none); a batch is cut to fit
    batch_max_bytes: ClassVar[int] = 0

    def __init__(self, name: str, config: ConfigT | None = None) -> None:
        super().__init__(name, config)
        register_config(self.config)  # redacted from every error text and log from now on
        register_auth(self.auth())
        self.transport = Transport(self)
        #: merges Mailer.send_many's concurrent sends into batch requests
        self._coalescer: Coalescer | None = None

    # -- construction ------------------------------------------------------------------

    url_credentials = staticmethod(url_credentials)
    url_base = staticmethod(url_base)

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``type://SECRET@default`` for single-key APIs (``dsn_key_field``); adapters with
        several credentials (Mailgun, SES, Mailjet) override this."""
        if cls.dsn_key_field is None:
            return super().config_from_url(url, params)
        return key_config(url, params, cls.dsn_key_field)

    # -- the endpoint ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.config.base_url or self.default_base_url

    @property
    def attempts_timeout(self) -> float | None:
        """``timeout`` bounds a try and its retries together: an idempotent retry after
        a read timeout gets what is left of it, not a second ``timeout``."""
        return float(self.config.timeout)

    def send_target(self) -> str:
        """The path a send POSTs to; a method so it can depend on the config."""
        return self.send_path

    def verify_target(self) -> str | None:
        """The path :meth:`verify` GETs; a method so it can depend on the config."""
        return self.verify_path

    def auth(self) -> httpx.Auth | None:
        """Request authentication (Basic, SigV4); header-token providers use auth_headers."""
        return None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credential, added to every request, never logged."""
        if self.key_header is None or self.dsn_key_field is None:
            return {}
        secret = getattr(self.config, self.dsn_key_field)
        return {self.key_header: self.key_prefix + secret.get_secret_value()}

    def client(self) -> httpx.AsyncClient:
        """The provider's one client (:meth:`Transport.client`)."""
        return self.transport.client()

    async def request(self, request: HTTPRequest, *, commit: bool = True) -> Answer:
        """Send one request (:meth:`Transport.send`): its answer, or an error of ours."""
        return await self.transport.send(request, commit=commit)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} base_url={self.base_url!r}>"

    # -- what the API accepts -----------------------------------------------------------

    def unsupported(self, feature: str) -> None:
        """Refuse a message using ``feature`` (before any I/O), or drop it when told to.

        Silently dropping tags or an inline image is how mail goes out wrong; the user
        opts into that with ``ignore_unsupported=True``.
        """
        if self.config.ignore_unsupported:
            logger.warning(
                "provider %r: sending without %s (ignore_unsupported)", self.name, feature
            )
            return
        raise UnsupportedFeature(
            f"provider {self.name!r} ({type(self).__name__}) does not support {feature}; "
            "set ignore_unsupported=true to send without it",
            provider=self.name,
        )

    def refuse(self, rule: str) -> None:
        """Refuse a message that breaks an API rule no option can work around (another
        provider may still take it: the Mailer fails over)."""
        raise UnsupportedFeature(
            f"provider {self.name!r} ({type(self).__name__}) {rule}", provider=self.name
        )

    @staticmethod
    def message_size(message: Message) -> int:
        """The message's size as an API counts it: its rendering, attachments in base64.

        The rendering is the one :meth:`Provider.send` made (and checked) before any I/O,
        kept on the message: reading its length renders nothing, and a streamed rendering
        is not joined to count it.
        """
        return message.rendered_size

    def check(self, message: Message) -> int:
        """Refuse, before any I/O, a message this API cannot take; its size otherwise."""
        if message.sender is None:
            raise MessageError("the message has no sender (From)")
        if message.smtputf8 and not self.smtputf8:
            self.refuse(
                "cannot send to or from an address with a non-ASCII local part (SMTPUTF8): "
                "its API takes 7-bit ASCII local parts only; send such a message through "
                "an SMTP server that offers SMTPUTF8"
            )
        size = self.message_size(message) if self.max_message_bytes or self.batch_size else 0
        if self.max_message_bytes and size > self.max_message_bytes:
            self.refuse(
                f"takes messages up to {_megabytes(self.max_message_bytes)} with attachments "
                f"encoded, and this one is {_megabytes(size)}; send it through SMTP or a "
                "provider with a larger limit"
            )
        if self.requires_to and not message.to:
            self.refuse(
                "needs at least one To recipient (its API requires To); send Bcc-only "
                "messages through SMTP or SES, or put a To address in the message"
            )
        return size

    def dkim_options(self, message: Message) -> DKIMOptions | None:
        """The DKIM options in effect: the message's, else this provider's (if it has any)."""
        return choose(message, getattr(self.config, "dkim", None))

    # -- the request ---------------------------------------------------------------------

    def payload(self, message: Message) -> Payload[Any]:
        """``message`` walked into this API's payload (refusing before any I/O)."""
        return self.payload_class(self, message).walk()

    def build_request(self, message: Message) -> HTTPRequest:
        """The one API call that sends ``message``."""
        return self.payload(message).request()

    async def presign(self, message: Message) -> None:
        """Make the message's DKIM signature off the event loop when this API carries one
        (``Payload.signs_dkim``); kept on the message, the walk reads it back. Any other
        API refuses dkim in its walk, before any work of signing."""
        if self.payload_class.signs_dkim:
            dkim = self.dkim_options(message)
            if dkim is not None:
                await sign(message, dkim)

    # -- templates: the config's ``templates`` mapping; the payload's set_template sends --

    def template_id(self, name: str) -> str | None:
        return self.config.templates.get(name)

    async def _send(self, message: Message) -> SendResult:
        if (
            self.batch_size
            and batching.get()
            and self.batchable(message)
            # a stored template goes through its own endpoint, one message a request
            and (message.template is None or self.template_id(message.template) is None)
        ):
            # One of Mailer.send_many's sends: it goes in a batch request with others.
            payload = self.payload(message)  # may refuse the message: before any I/O
            if self._coalescer is None:
                self._coalescer = Coalescer(self.batch_size, self._send_chunk, self.batch_max_bytes)
            return await self._coalescer.submit(payload, payload.size)
        await self.presign(message)
        request = self.build_request(message)  # may refuse the message: before any I/O
        answer = await self.transport.send(request)
        if answer.is_success:
            return self.parse_success(message, answer)
        raise self.error_for(answer, message)

    def verify_request(self) -> HTTPRequest | None:
        """The request :meth:`verify` makes (None: nothing to check)."""
        path = self.verify_target()
        return None if path is None else HTTPRequest("GET", path)

    def verify_accepts(self, answer: Answer) -> bool:
        """Whether the answer to :meth:`verify_request` proves the credentials work."""
        return answer.is_success

    async def verify(self) -> None:
        """One authenticated call: proves reachability and credentials without sending."""
        request = self.verify_request()
        if request is None:
            return
        answer = await self.transport.send(request, commit=False)
        if not self.verify_accepts(answer):
            raise self.error_for(answer)

    # -- the answer ----------------------------------------------------------------------

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        """Map a 2xx answer to a SendResult, with the id from ``response_id_field``."""
        return self.result(message, answer, provider_message_id=self.provider_id(answer))

    def provider_id(self, answer: Answer) -> str | None:
        """The provider's id for the message in a 2xx answer, if it gives one."""
        if self.response_id_field is None:
            return None
        value = answer.get(self.response_id_field)
        return str(value) if value is not None else None

    def error_text(self, answer: Answer) -> str:
        """The provider's own words for an error: its JSON message, else the body."""
        return error_text(answer)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        """A provider-specific error for this answer, or None for the status mapping.

        ``message`` is the message being sent (None for :meth:`verify`). The rule every
        adapter follows: a refusal about the account, sender identity, domain, quota or
        plan fails over (:class:`AuthError` when a person must act, :class:`RateLimited`
        with the rest until it can heal when time fixes it); a refusal about this
        message or its recipients does not (:class:`PermanentError`).
        """
        return None

    def retry_after(self, answer: Answer) -> float | None:
        """How long the provider asked us to rest: Retry-After, else its reset header."""
        for header in ("Retry-After", *self.rate_limit_reset_headers):
            seconds = parse_retry_after(answer.headers.get(header))
            if seconds is not None:
                return seconds
        return None

    def error_for(self, answer: Answer, message: Message | None = None) -> DeliveryError:
        """The one mapping from a non-2xx answer (or a failed batch item) to the error tree."""
        status = answer.status
        text = redact(self.error_text(answer))
        body = self.body(answer)
        special = self.classify_error(answer, text, message)
        if special is not None:
            special.provider = special.provider or self.name
            special.code = special.code if special.code is not None else status
            special.response = special.response if special.response is not None else body
            return special
        retry_after = self.retry_after(answer) if status == 429 else None
        return status_error(
            status, text, retry_after=retry_after, provider=self.name, code=status, response=body
        )

    def item_error(
        self, status: int, item: Mapping[str, Any], message: Message | None
    ) -> DeliveryError:
        """The error for one item of a batch answer, read exactly as a single send's
        answer with ``status`` would be (one classification for both)."""
        return self.error_for(Answer.item(status, item), message)

    @staticmethod
    def body(answer: Answer) -> str:
        """The answer's text as an error or result keeps it: cut, and redacted."""
        return redact(answer.text[:MAX_BODY])

    def result(
        self,
        message: Message,
        answer: Answer,
        *,
        provider_message_id: str | None = None,
        rejected: Mapping[str, str] | None = None,
    ) -> SendResult:
        refused = dict(rejected or {})
        lowered = {addr.lower() for addr in refused}
        accepted = [r for r in message.envelope_recipients if r.lower() not in lowered]
        return SendResult(
            provider=self.name,
            message_id=message.message_id,
            provider_message_id=provider_message_id,
            accepted=accepted,
            rejected=refused,
            response=self.body(answer),
        )

    def recipients_in(self, message: Message | None, reported: Sequence[str]) -> list[str]:
        """The message's own recipients that ``reported`` (addresses an API named, in any
        form: ``Name <a@x>``, other case) refers to; never an address not in the message."""
        if message is None:
            return []
        wanted = {email.lower() for _, email in getaddresses(list(reported)) if "@" in email}
        return [r for r in message.envelope_recipients if r.lower() in wanted]

    def uncertain(self, text: str, count: int) -> list[batch.BatchOutcome]:
        """A 2xx batch answer we cannot read per message: each may have been accepted."""
        error = DeliveryUncertain(
            f"{text}; the provider may have accepted the message", provider=self.name
        )
        return [batch.item_copy(error, self.name) for _ in range(count)]

    # -- batches -------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[Message]) -> list[batch.BatchOutcome]:
        """Send ``messages``; one outcome per message, in order; never raises for one.

        With a batch endpoint (``batch_size``), messages go ``batch_size`` per request and
        each gets its own result from the answer; a message the batch form cannot carry
        (:meth:`batchable`) is sent alone. Otherwise every message is sent on its own,
        ``max_connections`` at a time. A batch that ends without a definitive answer
        makes each of its items DeliveryUncertain, unless the batch request is
        idempotent (:meth:`batch_request` sets a key), in which case it is retried once.
        """
        return await batch.send_batch(self, messages)

    async def _send_chunk(self, items: list[batch.Item]) -> list[batch.BatchOutcome]:
        return await batch.send_chunk(self, items)

    def batchable(self, message: Message) -> bool:
        """Whether the batch endpoint can carry ``message`` (else it is sent alone)."""
        return True

    def batch_request(self, payloads: list[Payload[Any]]) -> HTTPRequest:
        """One request sending every payload (adapters with ``batch_size`` implement it)."""
        raise NotImplementedError

    def batch_groups(self, payloads: list[Payload[Any]]) -> list[list[int]]:
        """The payloads (by position) that may share one batch request: all of them,
        unless the batch form is one content to many recipients (Mandrill), where only
        messages with the same content can."""
        return [list(range(len(payloads)))]

    def batch_has_items(self, answer: Answer, count: int) -> bool:
        """Whether a non-2xx batch answer still reports each item (Mailjet does)."""
        return False

    def parse_batch(self, messages: list[Message], answer: Answer) -> list[batch.BatchOutcome]:
        """One outcome per message from the batch answer, in order."""
        raise NotImplementedError

    async def finish_batch(
        self, messages: list[Message], answer: Answer
    ) -> list[batch.BatchOutcome]:
        """The outcomes of a batch the API accepted (2xx, or items reported): what
        :meth:`parse_batch` reads from the answer, unless the API reports each item only
        later (MailerSend's bulk endpoint: a bounded poll)."""
        return self.parse_batch(messages, answer)

    def webhook(self) -> WebhookParser[Any] | None:
        """This provider's webhook receiver, or None without a parser or a ``webhook``
        block in its config (its events are then not accepted)."""
        config = getattr(self.config, "webhook", None)
        if self.webhook_parser is None or config is None:
            return None
        return self.webhook_parser(self.name, config)

    async def lookup(self, message_id: str, *, age: float) -> Lookup:
        """What the provider's own records say about ``message_id`` (sent ``age``
        seconds ago at the latest); an adapter with a search API overrides it. The
        default knows nothing."""
        return Lookup("unknown", f"{type(self).__name__} offers no lookup")
