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
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

import httpx
from pydantic import BaseModel, Field, field_validator

from .._dkim import DKIMOptions, choose, sign
from .._log import secret_values
from ..errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RateLimited,
    TransientError,
)
from ..message import Address, Message
from ..provider import Provider, ProviderConfig, deadline_remaining
from ..result import SendResult

__all__ = [
    "HTTPConfig",
    "HTTPProvider",
    "HTTPRequest",
    "b64",
    "parse_retry_after",
    "unique_recipients",
]

logger = logging.getLogger("mailer.providers.http")

#: how much of a response body is kept on an error (bodies can be whole HTML pages)
MAX_BODY = 2000
_USER_AGENT = "mailer-failover (+https://pypi.org/project/mailer-failover/)"


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


class HTTPProvider(Provider):
    """Base class for providers that send through an HTTP API.

    Subclasses set ``Config`` (an :class:`HTTPConfig` subclass), ``default_base_url``,
    ``verify_path``, ``rate_limit_reset_headers`` when the provider has its own, and
    implement :meth:`build_request` and :meth:`parse_success`. They may refine
    :meth:`error_text` and :meth:`classify_error` for provider-specific error bodies.
    """

    Config: ClassVar[type[BaseModel]] = HTTPConfig
    config: HTTPConfig

    #: the API's public base URL, used when the config has no ``base_url``
    default_base_url: ClassVar[str] = ""
    #: a cheap authenticated GET that :meth:`verify` calls, relative to the base URL
    verify_path: ClassVar[str | None] = None
    #: provider headers giving the rate-limit reset (delay or timestamp), after Retry-After
    rate_limit_reset_headers: ClassVar[tuple[str, ...]] = ()
    #: for single-secret APIs: the config field a ``type://SECRET@default`` DSN fills
    dsn_key_field: ClassVar[str | None] = None
    #: whether :meth:`build_request` sends the message's own MIME bytes when it is
    #: DKIM-signed (then ``_send`` signs first, and :func:`mailer._dkim.signature` hands
    #: the signature to ``build_request``); APIs that take JSON fields refuse ``dkim``
    raw_mime_dkim: ClassVar[bool] = False

    def __init__(self, name: str, config: BaseModel | None = None) -> None:
        super().__init__(name, config)
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

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
        )
        self._http_loop = loop
        return self._http

    def verify_target(self) -> str | None:
        """The path :meth:`verify` GETs; a method so it can depend on the config."""
        return self.verify_path

    def auth(self) -> httpx.Auth | None:
        """Request authentication (Basic, SigV4); header-token providers use auth_headers."""
        return None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credential, added to every request, never logged."""
        return {}

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
        raise MessageError(
            f"provider {self.name!r} ({type(self).__name__}) does not support {feature}; "
            "set ignore_unsupported=true to send without it"
        )

    # -- the adapter's part ------------------------------------------------------------

    def build_request(self, message: Message) -> HTTPRequest:
        """Map the message to the one API call that sends it."""
        raise NotImplementedError

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        """Map a 2xx response to a SendResult. The default reads no provider id."""
        return self.result(message, response)

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

        ``message`` is the message being sent (None for :meth:`verify`).
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

    # -- the boundary ------------------------------------------------------------------

    def dkim_options(self, message: Message) -> DKIMOptions | None:
        """The DKIM options in effect: the message's, else this provider's (if it has any)."""
        return choose(message, getattr(self.config, "dkim", None))

    async def _send(self, message: Message) -> SendResult:
        dkim = self.dkim_options(message)
        if dkim is not None:
            if self.raw_mime_dkim:
                await sign(message, dkim)  # off the loop; kept on the message
            else:
                self.unsupported(
                    "dkim (its API builds the MIME from JSON fields, so a signature made "
                    "here cannot survive; use the provider's own domain signing, or an "
                    "SMTP or SES provider)"
                )
        request = self.build_request(message)  # may refuse the message: before any I/O
        response = await self.request(request)
        if response.is_success:
            return self.parse_success(message, response)
        raise self.error_for(response, message)

    async def verify(self) -> None:
        """One authenticated GET: proves reachability and credentials without sending."""
        path = self.verify_target()
        if path is None:
            return
        response = await self.request(HTTPRequest("GET", path))
        if not response.is_success:
            raise self.error_for(response)

    async def request(self, request: HTTPRequest) -> httpx.Response:
        """Send one request, mapping every transport failure into the error tree."""
        client = self.client()
        total = deadline_remaining(self.config.timeout)
        assert total is not None
        timeout = httpx.Timeout(total, connect=min(total, self.config.connect_timeout))
        headers = {**request.headers, **self.auth_headers()}
        auth = self.auth()
        where = f"{request.method} {self.base_url}{request.path}"
        try:
            response = await client.request(
                request.method,
                request.path,
                json=request.json,
                files=request.files,
                headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.ProxyError) as exc:  # fmt: skip
            # nothing reached the API: the next provider cannot cause a duplicate
            raise TransientError(
                f"{where}: {self._describe(exc)} (nothing was sent)", provider=self.name
            ) from exc
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # read/write timeout, reset or dropped reply: the API may have the message
            raise DeliveryUncertain(
                f"{where}: {self._describe(exc)} after the request was sent; "
                "the message may have been accepted",
                provider=self.name,
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryUncertain(f"{where}: {self._describe(exc)}", provider=self.name) from exc
        logger.debug("provider %r: %s -> %s", self.name, where, response.status_code)
        return response

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
            return DeliveryUncertain(
                f"HTTP {status}: {text}; the provider may have accepted the message", **kw
            )
        # 1xx/3xx: something between us and the API (a redirecting proxy, a wrong
        # base_url) answered instead of it, so the API never saw the request
        return TransientError(f"HTTP {status} unexpected answer (check base_url): {text}", **kw)


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
