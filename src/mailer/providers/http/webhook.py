"""The shape every ESP's webhook receiver has: verify the request, then parse its events.

One :class:`WebhookParser` subclass per ESP lives beside its sender (``_sendgrid_webhook``
beside ``_sendgrid``); the provider class names it (``HTTPProvider.webhook_parser``) and
its config has a ``webhook`` block (a :class:`WebhookConfig` subclass, secret-typed). The
serving side (``mailer.webhooks``: ASGI, WSGI, Django, Flask, the CLI) knows no ESP: it
hands a :class:`WebhookRequest` to :meth:`WebhookParser.verify`, then to
:meth:`WebhookParser.parse`, and stores what comes back. Adding an ESP is one module and
one config block.

Verification comes first and is all or nothing: :class:`WebhookRefused` (401) before any
event is built, so a refused request stores and changes nothing. :class:`WebhookMalformed`
(400) is a body that verified but cannot be read. Neither text carries a secret or the
payload: they say which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from ..._events.model import DeliveryEvent

__all__ = [
    "MAX_SKEW",
    "BasicAuthWebhookConfig",
    "BasicAuthWebhookParser",
    "HmacBodyWebhookParser",
    "SigningSecretWebhookConfig",
    "WebhookConfig",
    "WebhookMalformed",
    "WebhookParser",
    "WebhookRefused",
    "WebhookRequest",
    "check_basic_auth",
    "check_hmac_sha256_hex",
    "check_skew",
    "event_time",
    "json_body",
    "need_cryptography",
    "nonempty_text",
    "stable_event_id",
]

#: a signed timestamp further than this from now is a replay (seconds; issue 22)
MAX_SKEW = 300.0

ConfigT = TypeVar("ConfigT", bound="WebhookConfig")
SecretConfigT = TypeVar("SecretConfigT", bound="SigningSecretWebhookConfig")


class WebhookRefused(Exception):
    """401: a missing or bad signature or credentials, or a replayed timestamp."""


class WebhookMalformed(Exception):
    """400: a verified body that is not what the ESP documents."""


@dataclass(frozen=True)
class WebhookRequest:
    """One POST as received: ``headers`` with lower-case names, the whole ``body``,
    ``now`` (epoch seconds) for the replay check, so tests need no clock."""

    provider: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    now: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class WebhookConfig(BaseModel):
    """A provider's ``webhook`` block; each ESP's subclass adds its secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuthWebhookConfig(WebhookConfig):
    """For ESPs that do not sign (Postmark, Mailjet, Brevo): ``user:password`` put in
    the webhook URL (``https://user:password@host/...``), sent as HTTP Basic."""

    basic_auth: SecretStr

    @field_validator("basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr) -> SecretStr:
        user, colon, password = value.get_secret_value().partition(":")
        if not colon or not user or not password:
            raise ValueError("webhook.basic_auth must be 'user:password', both non-empty")
        return value


class WebhookParser(Generic[ConfigT]):
    """Verify and parse one ESP's webhook posts for the provider named ``provider``."""

    #: the ``webhook`` block's model (the provider's config declares it)
    Config: ClassVar[type[WebhookConfig]] = WebhookConfig
    #: senders (``WebHook-Request-Origin``) whose CloudEvents 1.0 validation request, an
    #: HTTP OPTIONS, this ESP's receiver answers with its consent (docs/events.md); none
    #: by default: an OPTIONS is then 405 like any other method but POST
    preflight_origins: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, provider: str, config: ConfigT) -> None:
        self.provider = provider
        self.config = config

    async def verify(self, request: WebhookRequest) -> None:
        """Raise WebhookRefused unless the request is the ESP's (signature, credentials,
        timestamp within :data:`MAX_SKEW`)."""
        raise NotImplementedError

    async def handshake(self, request: WebhookRequest) -> dict[str, Any] | None:
        """The JSON body answering a verified request that is a question rather than
        events (Event Grid's subscription validation wants its code echoed back), or
        None for an ordinary post (the default). A body returned here is answered 200
        with nothing parsed or stored, so it must be built from the verified request
        only; it is the one way a parser chooses what the response says."""
        return None

    async def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """The events of a verified request (WebhookMalformed when unreadable); may be
        empty (a test ping, a subscription confirmation)."""
        raise NotImplementedError

    def event(self, **fields: Any) -> DeliveryEvent:
        """A DeliveryEvent for this provider; a field the model refuses is malformed."""
        try:
            return DeliveryEvent(provider=self.provider, **fields)
        except (ValueError, TypeError) as exc:
            raise WebhookMalformed(f"an event does not fit: {exc}") from None


class BasicAuthWebhookParser(WebhookParser[BasicAuthWebhookConfig]):
    """A parser for an ESP that does not sign (Postmark, SparkPost, Mailjet, Brevo): the
    ``webhook`` block is :class:`BasicAuthWebhookConfig` and :meth:`verify` is
    :func:`check_basic_auth`; the subclass writes :meth:`parse`."""

    Config: ClassVar[type[WebhookConfig]] = BasicAuthWebhookConfig

    async def verify(self, request: WebhookRequest) -> None:
        check_basic_auth(request, self.config)


class SigningSecretWebhookConfig(WebhookConfig):
    """The ``webhook`` block of an ESP that signs the body with a shared secret."""

    #: the webhook's signing secret, as the ESP shows it when the webhook is made
    signing_secret: SecretStr


class HmacBodyWebhookParser(WebhookParser[SecretConfigT]):
    """A parser for an ESP that sends the hex HMAC-SHA256 of the body in one header
    (MailerSend, Mailtrap): :meth:`verify` is :func:`check_hmac_sha256_hex` with the
    subclass's header and refusal texts; the subclass writes :meth:`parse`."""

    #: the header carrying the signature, and the refusals when it is missing or bad
    signature_header: ClassVar[str]
    missing_signature: ClassVar[str]
    bad_signature: ClassVar[str]

    async def verify(self, request: WebhookRequest) -> None:
        check_hmac_sha256_hex(
            request,
            self.signature_header,
            self.config.signing_secret,
            missing=self.missing_signature,
            bad=self.bad_signature,
        )


def json_body(request: WebhookRequest) -> Any:
    try:
        return json.loads(request.body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookMalformed("the body is not JSON") from None


def check_skew(timestamp: str | int | float | None, now: float) -> None:
    """Refuse a signed timestamp (epoch seconds) missing or off by more than MAX_SKEW."""
    try:
        value = float(timestamp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise WebhookRefused("the signed timestamp is missing or not a number") from None
    if abs(now - value) > MAX_SKEW:
        raise WebhookRefused("the signed timestamp is more than 5 minutes off (a replay?)")


def check_basic_auth(request: WebhookRequest, config: BasicAuthWebhookConfig) -> None:
    """Compare the Authorization header with ``config.basic_auth`` in constant time."""
    header = request.header("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise WebhookRefused("no HTTP Basic credentials (put user:password in the webhook URL)")
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRefused("the HTTP Basic credentials are not base64") from None
    expected = config.basic_auth.get_secret_value().encode()
    if not hmac.compare_digest(given, expected):
        raise WebhookRefused("the HTTP Basic credentials do not match webhook.basic_auth")


def check_hmac_sha256_hex(
    request: WebhookRequest, header: str, secret: SecretStr, *, missing: str, bad: str
) -> None:
    """Refuse unless header ``header`` is the hex HMAC-SHA256 of the body keyed with
    ``secret`` (case and surrounding space ignored), compared in constant time; ``missing``
    and ``bad`` are the refusals' texts."""
    given = request.header(header)
    if not given:
        raise WebhookRefused(missing)
    key = secret.get_secret_value().encode()
    expected = hmac.new(key, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.strip().lower(), expected):
        raise WebhookRefused(bad)


def event_time(value: Any) -> datetime:
    """An ESP's timestamp (epoch seconds, or ISO 8601 with a zone) as aware UTC."""
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and _number(value)):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise WebhookMalformed("an event's timestamp is missing or unreadable")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def nonempty_text(value: Any) -> str | None:
    """``value`` when it is a non-empty string, else None: an ESP's optional text field."""
    return value if isinstance(value, str) and value else None


def stable_event_id(*parts: Any) -> str:
    """An event id for ESPs that give none (Postmark deliveries, Brevo): a digest of what
    identifies the event, so the ESP's retry of the same post is a duplicate."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def need_cryptography() -> None:
    """Signature checks need cryptography: a clear error naming the extra without it."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ValueError(
            "verifying this ESP's webhook signatures needs cryptography: "
            "pip install 'mailer-failover[webhooks]'"
        ) from None
