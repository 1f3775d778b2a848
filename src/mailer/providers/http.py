"""The shared base of the HTTP API providers: one client, one error boundary.

Each adapter (SendGrid, Mailgun, ...) only maps a :class:`~mailer.Message` to one request
(:meth:`HTTPProvider.build_request`) and one response back to a
:class:`~mailer.SendResult` (:meth:`HTTPProvider.parse_success`), as django-anymail's
backends do. Everything that decides *whether the Mailer may fail over* lives here, in
:meth:`HTTPProvider.request` and :meth:`HTTPProvider.error_for`, so that every adapter
classifies a timeout or a 503 the same way.

The classification follows one question: could the provider have accepted the message?

* Nothing left the process, or the server said so (connect error or timeout, waiting for
  a pooled connection, 429, 401/403, 408, 502, 503): fail over, no duplicate is possible.
* The request was sent and no definitive answer came back (read or write timeout, a
  dropped connection, 500, 504 and other 5xx): :class:`DeliveryUncertain`. A 500 can be
  raised after the message was queued (by the code that builds the reply), and a 504 is a
  gateway saying it gave up waiting for an origin that may still be processing the
  request. Failing over on either may deliver the message twice; the Mailer's
  ``on_uncertain`` option lets users who prefer a duplicate to a delay opt in, and
  idempotent adapters (Resend) are retried on the same provider instead.
* The request was refused for what it says (other 4xx): :class:`PermanentError`, with the
  provider's own error text.

Secrets: every error text and response body is scrubbed of the config's ``SecretStr``
values before it is put on an exception, in case a provider echoes a credential back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import httpx
from pydantic import BaseModel, Field, SecretStr, field_validator

from .._errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RateLimited,
    TransientError,
    UnsupportedFeature,
)
from .._log import get_logger, register_secret, secret_values
from .._message import Address, Attachment, Envelope, Message
from .._message.dkim import DKIMOptions, choose, sign
from .._message.mime import encode_header_value
from .._provider import Provider, ProviderConfig, deadline_remaining, deep_merge
from .._proxy_url import parse_proxy_url
from .._result import SendResult
from ._coalesce import Coalescer, batching
from ._slots import Slots

__all__ = [
    "MAX_BODY",
    "BatchOutcome",
    "HTTPConfig",
    "HTTPProvider",
    "HTTPRequest",
    "Payload",
    "address_dict",
    "addresses_text",
    "b64",
    "encode_header_value",
    "parse_retry_after",
    "require",
    "unique_recipients",
]

T = TypeVar("T")

logger = logging.getLogger("mailer.providers.http")

#: how much of a response body is kept on an error (bodies can be whole HTML pages)
MAX_BODY = 2000
_USER_AGENT = "mailer-failover (+https://pypi.org/project/mailer-failover/)"


#: the proxies httpx can use (``socks5h://`` resolves at the proxy, as curl's)
_HTTP_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
#: httpcore's loggers for proxied connections: at DEBUG, the SOCKS trace shows the
#: proxy's user and password, so our redaction filter goes on them too
_HTTPCORE_PROXY_LOGGERS = ("httpcore.socks", "httpcore.proxy")


class HTTPConfig(ProviderConfig):
    """Options every HTTP adapter takes.

    ``base_url`` points an adapter at an EU region, a proxy or a local fake;
    ``timeout`` bounds one request (the Mailer's ``send_timeout`` may shorten it);
    ``ignore_unsupported`` sends a message without the features the provider lacks
    instead of refusing it.
    """

    base_url: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=10, ge=1)
    ignore_unsupported: bool = False
    ca_file: Path | None = None
    #: send every request through this proxy: ``http://`` or ``https://`` (CONNECT),
    #: ``socks5://`` or ``socks5h://`` (the ``proxy`` extra); ``user:password@`` allowed.
    #: A secret. Without it, httpx's environment variables (HTTPS_PROXY, NO_PROXY) apply
    proxy: SecretStr | None = Field(default=None, repr=False)

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            proxy = parse_proxy_url(value.get_secret_value(), _HTTP_PROXY_SCHEMES)
            register_secret(proxy.password)
            for name in _HTTPCORE_PROXY_LOGGERS:  # their DEBUG traces print credentials
                get_logger(name)
            if proxy.scheme.startswith("socks"):
                try:
                    import socksio  # noqa: F401
                except ImportError:
                    raise ValueError(
                        "a socks5:// proxy needs socksio: pip install 'mailer-failover[proxy]'"
                    ) from None
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL")
        if parts.username or parts.password:
            # credentials belong in their own (secret) options, not in a logged URL
            raise ValueError("base_url must not contain credentials")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("ca_file is not a readable file")
        return value


@dataclass(slots=True)
class HTTPRequest:
    """One API call, as an adapter describes it; the base sends it.

    ``path`` is relative to the provider's base URL. ``files`` holds multipart parts as
    httpx takes them (``(field, (filename or None, content, content_type?))``).
    """

    method: str
    path: str
    json: Any = None
    files: list[tuple[str, tuple[Any, ...]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def b64(data: bytes) -> str:
    """Base64 text, as every JSON mail API wants attachment content."""
    return base64.b64encode(data).decode("ascii")


def unique_recipients(message: Message) -> tuple[list[Address], list[Address], list[Address]]:
    """to, cc and bcc with each mailbox only in its first list.

    Several APIs (SendGrid, Mailjet) refuse a request naming an address twice, and no
    recipient should get two copies anyway.
    """
    seen: set[str] = set()
    out: list[list[Address]] = []
    for group in (message.to, message.cc, message.bcc):
        kept = []
        for addr in group:
            key = addr.email.lower()
            if key not in seen:
                seen.add(key)
                kept.append(addr)
        out.append(kept)
    return out[0], out[1], out[2]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from a Retry-After or rate-limit reset header.

    Accepts delta seconds (``"120"``, ``"1.5"``), an HTTP date, or a Unix timestamp (a
    number too large to be a delay: SendGrid's X-RateLimit-Reset is one). Never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    current = time.time() if now is None else now
    try:
        number = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
            from datetime import UTC

            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - current, 0.0)
    if number != number or number in (float("inf"), float("-inf")):  # NaN, inf
        return None
    if number > 1_000_000_000:  # a Unix timestamp, not a delay
        return max(number - current, 0.0)
    return max(number, 0.0)


@dataclass(slots=True)
class Payload:
    """The request an adapter fills in, one hook per Message feature.

    ``data`` is the JSON body (or the per-message object a batch wraps), ``parts`` the
    multipart form fields (``add_field()`` adds one), ``headers`` extra HTTP request headers.
    ``flags`` lets a hook tell :meth:`HTTPProvider.finish` what it saw (SES: go Raw);
    ``dkim`` the signing options a hook accepted (the signature is made before
    :meth:`HTTPProvider.finish`, off the event loop, and read back with
    :func:`mailer._message.dkim.signature`).
    """

    message: Message
    data: dict[str, Any] = field(default_factory=dict)
    parts: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    dkim: DKIMOptions | None = None

    def add_field(self, name: str, value: str) -> None:
        """A plain multipart form field (a part without a filename)."""
        self.parts.append((name, (None, value)))


BatchOutcome = SendResult | DeliveryError | MessageError


class HTTPProvider(Provider):
    """Base class for providers that send through an HTTP API, the django-anymail way.

    :meth:`build_request` walks the Message once and calls one hook per feature
    (``set_from``, ``set_to``, ``set_cc``, ``set_bcc`` (all three through
    ``add_recipients``), ``set_reply_to``, ``set_subject``, ``set_body``, ``set_headers``,
    ``add_attachment``, ``add_inline``, ``set_tags``, ``set_metadata``, ``set_dkim``,
    ``set_envelope``, ``set_provider_options``), then :meth:`finish` turns the filled
    :class:`Payload` into the one request. A hook the adapter does not implement refuses the
    feature (:meth:`unsupported`: MessageError before any I/O, unless
    ``ignore_unsupported``), so no adapter drops cc, bcc or headers silently. The rules
    every API shares live here once: recipients de-duplicated across To/Cc/Bcc, the body
    rule (a text part, possibly empty, when there is no HTML), custom header values RFC
    2047-encoded, the Message-ID header, tag and reply-to limits, the credential header, the
    id read from the answer.

    Everything that decides *whether the Mailer may fail over* lives here too, in
    :meth:`request` and :meth:`error_for`; adapters refine it with :meth:`classify_error`.
    """

    Config: ClassVar[type[BaseModel]] = HTTPConfig
    config: HTTPConfig
    #: the request body leaves in :meth:`request`, which awaits the commit point first
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
    #: False when the API accepts a message without To (Bcc-only); else it is refused
    requires_to: ClassVar[bool] = True
    #: whether the Message-ID goes out as a header (False: the API sets its own)
    sends_message_id: ClassVar[bool] = True
    #: at most this many tags / reply-to addresses (None: no limit)
    max_tags: ClassVar[int | None] = None
    max_reply_to: ClassVar[int | None] = None
    #: messages per batch request (0: no batch endpoint; :meth:`send_batch` sends each)
    batch_size: ClassVar[int] = 0
    #: the API's size limit for one message, in bytes as sent (attachments base64-encoded,
    #: which the rendered MIME measures closely); 0: none known. A larger message is
    #: refused before any I/O, so the Mailer moves it on instead of the API rejecting it
    max_message_bytes: ClassVar[int] = 0
    #: the size limit of one batch request in bytes (0: none); a batch is cut to fit
    batch_max_bytes: ClassVar[int] = 0
    #: feature -> top-level JSON field the default hooks fill: ``from``, ``subject``,
    #: ``to``, ``cc``, ``bcc``, ``reply_to``, ``text``, ``html``, ``headers``, ``tags``,
    #: ``metadata``. A feature with no field (and no overriding hook) is refused.
    json_fields: ClassVar[Mapping[str, str]] = {}
    #: the attachment object's field names: ``list``, ``filename``, ``content`` (base64),
    #: optional ``type``, ``disposition``, ``content_id`` (inline parts are refused
    #: without it) and ``inline_list`` (when inline parts go in their own list)
    attachment_fields: ClassVar[Mapping[str, str]] = {}
    #: False when the API takes only 7-bit ASCII local parts: a message that needs
    #: SMTPUTF8 (:attr:`Message.smtputf8`) is refused before any I/O
    smtputf8: ClassVar[bool] = True

    def __init__(self, name: str, config: BaseModel | None = None) -> None:
        super().__init__(name, config)
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        #: requests in flight, at most max_connections: waiting for one is queueing, not
        #: a hang (providers/_slots.py). With the client, per loop; None off asyncio
        self._slots: Slots | None = None
        #: merges Mailer.send_many's concurrent sends into batch requests
        self._coalescer: Coalescer | None = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def url_credentials(cls, url: SplitResult) -> tuple[str | None, str | None]:
        """The (percent-decoded) user and password of a DSN; secrets often hold ``/``."""
        user = unquote(url.username) if url.username else None
        password = unquote(url.password) if url.password else None
        return user, password

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``type://SECRET@default`` (or ``type://user:SECRET@host``) for single-key APIs.

        The secret is the password when there is one (``apikey:KEY@``), else the user.
        Adapters with several credentials (Mailgun, SES, Mailjet) override this.
        """
        field = cls.dsn_key_field
        if field is None:
            return super().config_from_url(url, params)
        user, password = cls.url_credentials(url)
        secret = password or user
        require(bool(secret), f"{url.scheme} URL needs the {field.replace('_', ' ')}: "
                              f"{url.scheme}://{field.upper()}@default")  # fmt: skip
        return {**params, **cls.url_base(url), field: secret}

    @classmethod
    def url_base(cls, url: SplitResult) -> dict[str, Any]:
        """``base_url`` from a DSN's host, unless the host is the placeholder ``default``."""
        host = url.hostname
        if not host or host == "default":
            return {}
        port = f":{url.port}" if url.port else ""
        return {"base_url": f"https://{host}{port}"}

    # -- the client --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.config.base_url or self.default_base_url

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.config.ca_file is not None:
            context.load_verify_locations(cafile=str(self.config.ca_file))
        return context

    def client(self) -> httpx.AsyncClient:
        """The provider's one client, made on first use so building a Mailer costs no I/O.

        A client's pooled connections belong to the event loop that opened them; if the
        provider is used from a new loop (a test, a restarted SyncMailer), the old client is
        dropped rather than reused across loops.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._http is not None and not self._http.is_closed and self._http_loop is loop:
            return self._http
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
            keepalive_expiry=30.0,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            limits=limits,
            verify=self._ssl_context(),
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            proxy=proxy.get_secret_value() if (proxy := self.config.proxy) else None,
        )
        self._http_loop = loop
        self._slots = (
            Slots(self.config.max_connections, f"connection to {self.name!r}")
            if loop is not None
            else None
        )
        return self._http

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

    def secrets(self) -> list[str]:
        """Every secret value in the config, to be scrubbed from error texts."""
        return [text for text in secret_values(self.config) if len(text) >= 4]

    def scrub(self, text: str) -> str:
        """``text`` without any secret, in the forms they travel in: raw, and base64 as
        in a Basic ``Authorization`` header (an API may echo the header it was sent)."""
        forms: set[str] = set()
        for secret in self.secrets():
            forms.add(secret)
            forms.add(base64.b64encode(secret.encode()).decode("ascii"))
        auth = self.auth()
        if isinstance(auth, httpx.BasicAuth):
            header = auth._auth_header  # "Basic <base64(user:password)>"
            forms.add(header.split(" ", 1)[-1])
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= 4:
                text = text.replace(form, "***")
        return text

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None and not client.is_closed:
            # a client opened on a loop that is gone has nothing left to close
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} base_url={self.base_url!r}>"

    # -- features ----------------------------------------------------------------------

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
            "set ignore_unsupported=true to send without it", provider=self.name,
        )  # fmt: skip

    def refuse(self, rule: str) -> None:
        """Refuse a message that breaks an API rule no option can work around (another
        provider may still take it: the Mailer fails over)."""
        raise UnsupportedFeature(
            f"provider {self.name!r} ({type(self).__name__}) {rule}", provider=self.name
        )

    @staticmethod
    def message_size(message: Message) -> int:
        """The message's size as an API counts it: its rendering, attachments in base64."""
        return message.rendered_size  # a streamed rendering is not joined to count it

    def _limited(self, items: list[T], limit: int | None, one: str, many: str) -> list[T]:
        if limit is not None and len(items) > limit:
            self.unsupported(f"more than one {one}" if limit == 1 else f"more than {limit} {many}")
            return items[:limit]
        return items

    # -- the walk: one pass over the Message, one hook per feature ----------------------

    def build_request(self, message: Message) -> HTTPRequest:
        """Map the message to the one API call that sends it (refusing before any I/O)."""
        return self.finish(self.build_payload(message))

    def build_payload(self, message: Message) -> Payload:
        """Walk ``message`` once, calling the adapter's hook for each feature it uses."""
        if message.sender is None:
            raise MessageError("the message has no sender (From)")
        if message.smtputf8 and not self.smtputf8:
            self.refuse(
                "cannot send to or from an address with a non-ASCII local part (SMTPUTF8): "
                "its API takes 7-bit ASCII local parts only; send such a message through "
                "an SMTP server that offers SMTPUTF8"
            )
        size = self.message_size(message)
        if self.max_message_bytes and size > self.max_message_bytes:
            self.refuse(
                f"takes messages up to {_megabytes(self.max_message_bytes)} with attachments "
                f"encoded, and this one is {_megabytes(size)}; send it through SMTP or a "
                "provider with a larger limit"
            )
        payload = Payload(message)
        to, cc, bcc = unique_recipients(message)
        if not to and self.requires_to:
            self.refuse(
                "needs at least one To recipient (its API requires To); send Bcc-only "
                "messages through SMTP or SES, or put a To address in the message"
            )
        self.set_from(payload, message.sender)
        self.set_subject(payload, message.subject)
        if to:
            self.set_to(payload, to)
        if cc:
            self.set_cc(payload, cc)
        if bcc:
            self.set_bcc(payload, bcc)
        if message.reply_to:
            reply_to = self._limited(list(message.reply_to), self.max_reply_to,
                                     "reply-to address", "reply-to addresses")  # fmt: skip
            self.set_reply_to(payload, reply_to)
        # the body rule: HTML alone, or a text part (possibly empty) with or without it
        text = "" if message.text is None and message.html is None else message.text
        self.set_body(payload, text, message.html)
        headers = {name: encode_header_value(value) for name, value in message.headers.items()}
        if self.sends_message_id and message.message_id is not None:
            headers["Message-ID"] = message.message_id
        if headers:
            self.set_headers(payload, headers)
        for att in message.attachments:
            if att.inline:
                self.add_inline(payload, att)
            else:
                self.add_attachment(payload, att)
        if message.tags:
            tags = self._limited(list(message.tags), self.max_tags, "tag", "tags")
            self.set_tags(payload, tags)
        if message.metadata:
            self.set_metadata(payload, dict(message.metadata))
        dkim = self.dkim_options(message)
        if dkim is not None:
            self.set_dkim(payload, dkim)
        if message.envelope is not None:
            self.set_envelope(payload, message.envelope)
        options = self.options_for(message)
        if options:  # last, so that they win over what the walk put there
            self.set_provider_options(payload, options)
        return payload

    def finish(self, payload: Payload) -> HTTPRequest:
        """The request from a filled payload; adapters add config-level options here."""
        return HTTPRequest(
            "POST",
            self.send_target(),
            json=payload.data if not payload.parts else None,
            files=payload.parts or None,
            headers=payload.headers,
        )

    # The hooks. By default each puts its value in the JSON field ``json_fields`` names
    # for it (most JSON APIs need nothing more); with no field and no override, the
    # first four are a programming error and the rest refuse the feature.

    def json_address(self, address: Address) -> Any:
        """One address as the API's JSON takes it (default: ``Name <a@x>``)."""
        return str(address)

    def json_addresses(self, addresses: list[Address]) -> Any:
        """A recipient list as the API's JSON takes it (default: a list of addresses)."""
        return [self.json_address(a) for a in addresses]

    def _put(self, payload: Payload, feature: str, value: Any) -> bool:
        key = self.json_fields.get(feature)
        if key is None:
            return False
        payload.data[key] = value
        return True

    def _put_or(self, payload: Payload, feature: str, value: Any, refusal: str | None) -> None:
        if not self._put(payload, feature, value):
            if refusal is None:
                raise NotImplementedError(f"{type(self).__name__} does not map {feature}")
            self.unsupported(refusal)

    def set_from(self, payload: Payload, sender: Address) -> None:
        self._put_or(payload, "from", self.json_address(sender), None)

    def set_subject(self, payload: Payload, subject: str) -> None:
        self._put_or(payload, "subject", subject, None)

    def add_recipients(self, payload: Payload, kind: str, addresses: list[Address]) -> None:
        """One recipient list; ``kind`` is ``to``, ``cc`` or ``bcc``."""
        refusal = None if kind == "to" else f"{kind} recipients"
        self._put_or(payload, kind, self.json_addresses(addresses), refusal)

    def set_to(self, payload: Payload, to: list[Address]) -> None:
        self.add_recipients(payload, "to", to)

    def set_body(self, payload: Payload, text: str | None, html: str | None) -> None:
        """``text`` is None only when there is ``html``; either may be empty."""
        if text is not None:
            self._put_or(payload, "text", text, None)
        if html is not None:
            self._put_or(payload, "html", html, None)

    def set_cc(self, payload: Payload, cc: list[Address]) -> None:
        self.add_recipients(payload, "cc", cc)

    def set_bcc(self, payload: Payload, bcc: list[Address]) -> None:
        self.add_recipients(payload, "bcc", bcc)

    def set_reply_to(self, payload: Payload, reply_to: list[Address]) -> None:
        """A single value when the API takes one (``max_reply_to = 1``), else a list."""
        one = self.max_reply_to == 1
        value = self.json_address(reply_to[0]) if one else self.json_addresses(reply_to)
        self._put_or(payload, "reply_to", value, "reply-to addresses")

    def set_headers(self, payload: Payload, headers: dict[str, str]) -> None:
        """Custom headers (values RFC 2047-encoded), with Message-ID if it is sent."""
        key = self.json_fields.get("headers")
        if key is None:
            self.unsupported("custom headers")
        else:
            payload.data.setdefault(key, {}).update(headers)

    def set_tags(self, payload: Payload, tags: list[str]) -> None:
        """A single value when the API takes one (``max_tags = 1``), else a list."""
        self._put_or(payload, "tags", tags[0] if self.max_tags == 1 else tags, "tags")

    def set_metadata(self, payload: Payload, metadata: dict[str, str]) -> None:
        self._put_or(payload, "metadata", metadata, "metadata")

    def set_dkim(self, payload: Payload, options: DKIMOptions) -> None:
        """A DKIM-signed message (the message's ``dkim``, else the config's).

        A signature covers the bytes it was made over; only an adapter that sends the
        message's own MIME (SES Raw) can carry one: it sets ``payload.dkim`` and sends
        :func:`mailer._message.dkim.signature` before those bytes. An API that builds the MIME
        from JSON fields cannot, so by default the feature is refused.
        """
        self.unsupported(
            "dkim (its API builds the MIME from JSON fields, so a signature made here "
            "cannot survive; use the provider's own domain signing, or an SMTP or SES "
            "provider)"
        )

    def set_envelope(self, payload: Payload, envelope: Envelope) -> None:
        """An SMTP envelope other than the headers (a bounce address, other recipients).
        The APIs deliver to To/Cc/Bcc and bounce to their own address, so by default it
        is refused: sent anyway, the mail would go to the header recipients."""
        self.unsupported(
            "an envelope different from the headers (its API delivers to To/Cc/Bcc and "
            "sets its own bounce address; use an SMTP provider)"
        )

    def set_provider_options(self, payload: Payload, options: dict[str, Any]) -> None:
        """This provider's ``provider_options`` (django-anymail's ``esp_extra``): deep-merged
        into the JSON body; on a form API (``payload.parts``) each one is a field, a list
        one field per item, other values as JSON (``true``, ``3``)."""
        if not payload.parts:
            payload.data = deep_merge(payload.data, options)
            return
        for key, value in options.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Mapping | list):
                    self.refuse(f"takes form fields: provider_options {key!r} must be a value")
                payload.add_field(key, item if isinstance(item, str) else json.dumps(item))

    def add_attachment(self, payload: Payload, attachment: Attachment) -> None:
        if not self._attach(payload, attachment, inline=False):
            self.unsupported("attachments")

    def add_inline(self, payload: Payload, attachment: Attachment) -> None:
        if not self._attach(payload, attachment, inline=True):
            self.unsupported("inline attachments (content-id images)")

    def content_id(self, attachment: Attachment) -> str:
        """An inline part's content id as the API wants it (Postmark: ``cid:...``)."""
        return attachment.content_id or ""

    def _attach(self, payload: Payload, att: Attachment, *, inline: bool) -> bool:
        """One attachment object from ``attachment_fields``; False if the API has none."""
        names = self.attachment_fields
        if "list" not in names or (inline and "content_id" not in names):
            return False
        item = {names["filename"]: att.filename or "", names["content"]: b64(att.data())}
        if "type" in names:
            item[names["type"]] = att.content_type or ""
        if "disposition" in names:
            item[names["disposition"]] = "inline" if inline else "attachment"
        if inline:
            item[names["content_id"]] = self.content_id(att)
        key = names.get("inline_list", names["list"]) if inline else names["list"]
        payload.data.setdefault(key, []).append(item)
        return True

    # -- the adapter's other parts -----------------------------------------------------

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        """Map a 2xx response to a SendResult, with the id from ``response_id_field``."""
        return self.result(message, response, provider_message_id=self.provider_id(response))

    def provider_id(self, response: httpx.Response) -> str | None:
        """The provider's id for the message in a 2xx answer, if it gives one."""
        if self.response_id_field is None:
            return None
        data = self.json_body(response)
        value = data.get(self.response_id_field) if isinstance(data, Mapping) else None
        return str(value) if value is not None else None

    def error_text(self, response: httpx.Response) -> str:
        """The provider's own words for an error: its JSON message, else the body."""
        data = self.json_body(response)
        if isinstance(data, Mapping):
            for key in ("message", "Message", "error", "ErrorMessage"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    return value
            errors = data.get("errors")
            if isinstance(errors, list) and errors:
                texts = [
                    str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors
                ]
                return "; ".join(texts)
        text = response.text.strip()
        return text[:300] if text else (response.reason_phrase or "no error text")

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        """A provider-specific error for this response, or None for the generic mapping.

        ``message`` is the message being sent (None for :meth:`verify`). The rule every
        adapter follows: a refusal about the account, sender identity, domain, quota or
        plan fails over (:class:`AuthError` when a person must act, :class:`RateLimited`
        with the rest until it can heal when time fixes it); a refusal about this
        message or its recipients does not (:class:`PermanentError`).
        """
        return None

    # -- helpers for adapters ----------------------------------------------------------

    @staticmethod
    def json_body(response: httpx.Response) -> Any:
        """The parsed JSON body, or None when there is none (proxies answer in HTML)."""
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            return None

    def body(self, response: httpx.Response) -> str:
        return self.scrub(response.text[:MAX_BODY])

    def result(
        self,
        message: Message,
        response: httpx.Response,
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
            response=self.body(response),
        )

    def recipients_in(self, message: Message | None, reported: Sequence[str]) -> list[str]:
        """The message's own recipients that ``reported`` (addresses an API named, in any
        form: ``Name <a@x>``, other case) refers to; never an address not in the message."""
        if message is None:
            return []
        wanted = {email.lower() for _, email in getaddresses(list(reported)) if "@" in email}
        return [r for r in message.envelope_recipients if r.lower() in wanted]

    # -- the boundary ------------------------------------------------------------------

    def dkim_options(self, message: Message) -> DKIMOptions | None:
        """The DKIM options in effect: the message's, else this provider's (if it has any)."""
        return choose(message, getattr(self.config, "dkim", None))

    async def presign(self, message: Message) -> None:
        """Make the message's DKIM signature off the event loop if this adapter carries
        one (its :meth:`set_dkim` sets ``payload.dkim``); the walk then reads it back.
        An adapter that refuses dkim refuses here, before the work of signing."""
        dkim = self.dkim_options(message)
        if dkim is None:
            return
        probe = Payload(message)
        self.set_dkim(probe, dkim)
        if probe.dkim is not None:
            await sign(message, probe.dkim)  # kept on the message: made once

    async def _send(self, message: Message) -> SendResult:
        if self.batch_size and batching.get() and self.batchable(message):
            # One of Mailer.send_many's sends: it goes in a batch request with others.
            payload = self.build_payload(message)  # may refuse the message: before any I/O
            if self._coalescer is None:
                self._coalescer = Coalescer(self.batch_size, self._send_chunk, self.batch_max_bytes)
            size = self.message_size(message) if self.batch_max_bytes else 0
            return await self._coalescer.submit(payload, size)
        await self.presign(message)
        request = self.build_request(message)  # may refuse the message: before any I/O
        response = await self.request(request)
        if response.is_success:
            return self.parse_success(message, response)
        raise self.error_for(response, message)

    def verify_request(self) -> HTTPRequest | None:
        """The request :meth:`verify` makes (None: nothing to check)."""
        path = self.verify_target()
        return None if path is None else HTTPRequest("GET", path)

    def verify_accepts(self, response: httpx.Response) -> bool:
        """Whether the answer to :meth:`verify_request` proves the credentials work."""
        return response.is_success

    async def verify(self) -> None:
        """One authenticated call: proves reachability and credentials without sending."""
        request = self.verify_request()
        if request is None:
            return
        response = await self.request(request, commit=False)
        if not self.verify_accepts(response):
            raise self.error_for(response)

    async def request(self, request: HTTPRequest, *, commit: bool = True) -> httpx.Response:
        """Send one request, mapping every transport failure into the error tree.

        With ``commit``, the attempt's commit point is awaited right before the request
        body is written (httpcore's ``send_request_body.started`` trace event): a failure
        before it left nothing at the API (TransientError, safe to abandon or fail over);
        from it on, only an answer is certain. At the commit point the pre-commit budget
        stops bounding the read: the send's own deadline does.
        """
        client = self.client()
        slots = self._slots
        if slots is None:
            return await self._request(client, request, commit)
        await slots.acquire()  # TransientError when nothing was freed for a whole budget
        try:
            return await self._request(client, request, commit)
        finally:
            slots.release()

    async def _request(
        self, client: httpx.AsyncClient, request: HTTPRequest, commit: bool
    ) -> httpx.Response:
        """:meth:`request` holding a slot: its timeouts start now, after any queueing."""
        total = deadline_remaining(self.config.timeout)
        assert total is not None
        timeout = httpx.Timeout(total, connect=min(total, self.config.connect_timeout))
        headers = {**request.headers, **self.auth_headers()}
        auth = self.auth()
        where = f"{request.method} {self.base_url}{request.path}"
        # httpcore reports each step through the trace extension; the stubbed transports
        # of tests report none, and then the exception's type is all we know
        steps: list[str] = []

        async def trace(event: str, info: dict[str, Any]) -> None:
            steps.append(event)
            if commit and event.endswith(".send_request_body.started"):
                await self.commit_point()
                steps.append("committed")
                timeouts = info["request"].extensions.get("timeout")
                if isinstance(timeouts, dict):
                    left = deadline_remaining(self.config.timeout)
                    timeouts["read"] = timeouts["write"] = left

        try:
            response = await client.request(
                request.method,
                request.path,
                json=request.json,
                files=request.files,
                headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=timeout,
                extensions={"trace": trace},
            )
        except httpx.HTTPError as exc:
            raise self.transport_error(where, exc, sent=not steps or "committed" in steps) from exc
        logger.debug("provider %r: %s -> %s", self.name, where, response.status_code)
        return response

    def transport_error(self, where: str, exc: httpx.HTTPError, *, sent: bool) -> DeliveryError:
        """The one mapping from an httpx exception to the error tree.

        ``sent``: the body may have left (or we cannot tell). Before that, nothing reached
        the API and any failure is a TransientError.
        """
        text = self._describe(exc)
        timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(
            exc, httpx.PoolTimeout
        )
        # these do not heal in seconds: a same-provider retry only spends the deadline
        slow_to_heal = isinstance(exc, httpx.TimeoutException) or _caused_by(
            exc, (ssl.SSLError, ssl.CertificateError, socket.gaierror)
        )
        # waiting for our own pool says nothing about the provider's health
        no_verdict = isinstance(exc, httpx.PoolTimeout)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                            httpx.ProxyError)) or not sent:  # fmt: skip
            # nothing reached the API: the next provider cannot cause a duplicate; a hang
            # before the commit point is a slow call (the breaker opens at once), as for SMTP
            return TransientError(
                f"{where}: {text} (nothing was sent)",
                provider=self.name,
                retry_here=not slow_to_heal,
                timed_out=timed_out,
                no_verdict=no_verdict,
            )
        # a missing answer after the commit point is DeliveryUncertain, judged on its own
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError,
                            httpx.RemoteProtocolError)):  # fmt: skip
            # read/write timeout, reset or dropped reply: the API may have the message
            text = f"{text} after the request was sent; the message may have been accepted"
        return DeliveryUncertain(
            f"{where}: {text}",
            provider=self.name,
            retry_here=not slow_to_heal,
            no_verdict=no_verdict,
        )

    def _describe(self, exc: Exception) -> str:
        text = str(exc) or "no detail"
        return self.scrub(f"{type(exc).__name__}: {text}")

    def retry_after(self, response: httpx.Response) -> float | None:
        """How long the provider asked us to rest: Retry-After, else its reset header."""
        for header in ("Retry-After", *self.rate_limit_reset_headers):
            seconds = parse_retry_after(response.headers.get(header))
            if seconds is not None:
                return seconds
        return None

    def error_for(self, response: httpx.Response, message: Message | None = None) -> DeliveryError:
        """The one mapping from a non-2xx response to the error tree."""
        status = response.status_code
        text = self.scrub(self.error_text(response))
        body = self.body(response)
        special = self.classify_error(response, text, message)
        if special is not None:
            special.provider = special.provider or self.name
            special.code = special.code if special.code is not None else status
            special.response = special.response if special.response is not None else body
            return special
        kw: dict[str, Any] = {"provider": self.name, "code": status, "response": body}
        if status == 429:
            retry_after = self.retry_after(response)
            hint = f" (retry after {retry_after:.0f}s)" if retry_after is not None else ""
            return RateLimited(f"HTTP 429 rate limited{hint}: {text}",
                               retry_after=retry_after, **kw)  # fmt: skip
        if status in (401, 403):
            return AuthError(f"HTTP {status} credentials refused: {text}", **kw)
        if status == 408:  # the server gave up reading the request: it was not processed
            return TransientError(f"HTTP 408 request timeout: {text}", **kw)
        if 400 <= status < 500:
            return PermanentError(f"HTTP {status}: {text}", **kw)
        if status in (502, 503):
            return TransientError(f"HTTP {status} provider unavailable: {text}", **kw)
        if status >= 500:
            # 504: a gateway gave up waiting, and a retry would wait as long
            return DeliveryUncertain(
                f"HTTP {status}: {text}; the provider may have accepted the message",
                retry_here=status != 504,
                **kw,
            )
        # 1xx/3xx: something between us and the API (a redirecting proxy, a wrong
        # base_url) answered instead of it, so the API never saw the request
        return TransientError(f"HTTP {status} unexpected answer (check base_url): {text}", **kw)

    def item_error(
        self, status: int, item: Mapping[str, Any], message: Message | None
    ) -> DeliveryError:
        """The error for one item of a batch answer: the item's body, read exactly as a
        single send's answer with ``status`` would be (one classification for both)."""
        return self.error_for(httpx.Response(status, json=dict(item)), message)

    # -- batches -----------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[Message]) -> list[BatchOutcome]:
        """Send ``messages``; one outcome per message, in order; never raises for one.

        With a batch endpoint (``batch_size``), messages go ``batch_size`` per request and
        each gets its own result from the answer; a message the batch form cannot carry
        (:meth:`batchable`) is sent alone. Otherwise every message is sent on its own,
        ``max_connections`` at a time. A batch that ends without a definitive answer
        makes each of its items DeliveryUncertain, unless the batch request is
        idempotent (:meth:`batch_request` sets a key), in which case it is retried once.
        """
        outcomes: list[BatchOutcome | None] = [None] * len(messages)
        gate = asyncio.Semaphore(self.config.max_connections)
        singles: list[int] = []
        batched: list[tuple[int, Payload]] = []
        for index, message in enumerate(messages):
            if not self.batch_size or not self.batchable(message):
                singles.append(index)
                continue
            try:
                message.render()
                batched.append((index, self.build_payload(message)))
            except MessageError as exc:
                outcomes[index] = exc

        async def one(index: int) -> None:
            async with gate:
                try:
                    outcomes[index] = await self.send(messages[index])
                except (DeliveryError, MessageError) as exc:
                    outcomes[index] = exc

        async def chunk(items: list[tuple[int, Payload]]) -> None:
            async with gate:
                try:
                    results = await self._send_chunk(items)
                except Exception as exc:  # as Provider.send: we cannot know what was sent
                    error = DeliveryUncertain(
                        f"unexpected {type(exc).__name__} in batch: {exc}", provider=self.name
                    )
                    results = [self._item_copy(error) for _ in items]
            for (index, _), outcome in zip(items, results, strict=True):
                outcomes[index] = outcome

        chunks = self._chunks(batched)
        async with asyncio.TaskGroup() as group:
            for items in chunks:
                group.create_task(chunk(items))
            for index in singles:
                group.create_task(one(index))
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    def _chunks(self, batched: list[tuple[int, Payload]]) -> list[list[tuple[int, Payload]]]:
        """Batches of at most ``batch_size`` messages and ``batch_max_bytes`` bytes."""
        count, limit = max(self.batch_size, 1), self.batch_max_bytes
        chunks: list[list[tuple[int, Payload]]] = []
        current: list[tuple[int, Payload]] = []
        used = 0
        for item in batched:
            size = self.message_size(item[1].message)
            if current and (len(current) >= count or (limit and used + size > limit)):
                chunks.append(current)
                current, used = [], 0
            current.append(item)
            used += size
        if current:
            chunks.append(current)
        return chunks

    async def _send_chunk(self, items: list[tuple[int, Payload]]) -> list[BatchOutcome]:
        payloads = [payload for _, payload in items]
        for payload in payloads:
            if payload.dkim is not None:  # as presign: off the loop, before finish
                await sign(payload.message, payload.dkim)
        request = self.batch_request(payloads)
        tries = 2 if "Idempotency-Key" in request.headers else 1
        for attempt in range(tries):
            try:
                response = await self.request(request)
            except DeliveryError as exc:
                if isinstance(exc, DeliveryUncertain) and attempt + 1 < tries:
                    continue  # same key: the API delivers each item at most once
                return [self._item_copy(exc) for _ in items]
            break
        messages = [payload.message for payload in payloads]
        if not response.is_success and not self.batch_has_items(response, len(items)):
            return [self._item_copy(self.error_for(response)) for _ in items]
        return self.parse_batch(messages, response)

    def uncertain(self, text: str) -> DeliveryUncertain:
        """A 2xx answer we cannot read per message: each may have been accepted."""
        return DeliveryUncertain(f"{text}; the provider may have accepted the message",
                                 provider=self.name)  # fmt: skip

    def _item_copy(self, error: DeliveryError) -> DeliveryError:
        """One error per item (each collects its own attempts)."""
        clone = copy.copy(error)
        clone.provider = clone.provider or self.name
        clone.attempts = []
        return clone

    def batchable(self, message: Message) -> bool:
        """Whether the batch endpoint can carry ``message`` (else it is sent alone)."""
        return True

    def batch_request(self, payloads: list[Payload]) -> HTTPRequest:
        """One request sending every payload (adapters with ``batch_size`` implement it)."""
        raise NotImplementedError

    def batch_has_items(self, response: httpx.Response, count: int) -> bool:
        """Whether a non-2xx batch answer still reports each item (Mailjet does)."""
        return False

    def parse_batch(self, messages: list[Message], response: httpx.Response) -> list[BatchOutcome]:
        """One outcome per message from the batch answer, in order."""
        raise NotImplementedError


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or an exception it was raised from is one of ``kinds``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def address_dict(address: Address) -> dict[str, str]:
    """``{"email": ..., "name": ...}``: the address object most JSON mail APIs take."""
    out = {"email": address.email}
    if address.name:
        out["name"] = address.name
    return out


def require(condition: bool, text: str) -> None:
    """Raise ConfigError: DSN helpers use it for missing parts of a URL."""
    if not condition:
        raise ConfigError(text)


def addresses_text(addresses: Sequence[Address]) -> str:
    """A header-form list (``Name <a@x>, b@y``), for APIs that take one string."""
    return ", ".join(str(a) for a in addresses)
