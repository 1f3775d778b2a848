"""Options of the SMTP provider, validated once, when the provider is built.

Names follow Nodemailer's SMTP transport in snake_case, with Python units (seconds).
Nodemailer's and NexoMailer's own spellings (``requireTLS``, ``connectionTimeout`` in
milliseconds, ``auth.pass``, ``tls.rejectUnauthorized``, ``auth.type: 'oauth2'``...) are
accepted as aliases, so a block pasted from their pages works; they are renamed before
validation (see ``mailer._options``), so the model only ever holds our names.
Defaults are chosen for failover rather than for patience: Nodemailer waits two minutes
for a TCP connection, which is two minutes of mail not going out through the next
provider. Ours give up after 10 s (connect), 10 s (greeting) and 30 s (each reply).

Settings that cannot work together are refused here, as ConfigError, rather than at the
first send: a config that would send a password in plaintext never gets built.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..._errors import ConfigError
from ..._message.dkim import DKIMOptions
from ..._options import Alias, close_names, normalize_options
from ..._provider import ProviderConfig
from ._proxy import ProxyURL, parse_proxy

__all__ = [
    "OAUTH2_PRESETS",
    "AuthOptions",
    "OAuth2Options",
    "SMTPConfig",
    "TLSOptions",
    "TokenCallback",
    "config_from_url",
]

#: An async callable returning an access token, or ``(token, expires_in_seconds)``.
TokenCallback = Callable[[], Awaitable[str | tuple[str, float | None]]]

#: Token endpoints of the providers most people use XOAUTH2 with. ``{tenant}`` is
#: filled from ``oauth2.tenant`` (Microsoft's "common" by default).
OAUTH2_PRESETS: dict[str, dict[str, str]] = {
    "google": {"token_url": "https://oauth2.googleapis.com/token"},
    "microsoft": {
        "token_url": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "scope": "https://outlook.office.com/SMTP.Send offline_access",
    },
}

# An EHLO argument: a domain or an address literal; never spaces or controls.
_EHLO_NAME = re.compile(r"^(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}))$")
_CONTROL = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029]")


def _normalize(cls: Any, data: Any) -> Any:
    """Aliases renamed, refused options refused: from the model's own tables."""
    return normalize_options(
        data,
        aliases=cls.option_aliases,
        refused=cls.refused_options,
        seconds=cls.seconds_options,
    )


def is_loopback(host: str) -> bool:
    """``localhost`` (and ``*.localhost``, RFC 6761) or a loopback IP address.

    The one place that decides where plaintext is acceptable by default: traffic to
    these never leaves the machine.
    """
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: other libraries' names for our options (see mailer._options)
    option_aliases: ClassVar[Mapping[str, Alias]] = {}
    #: options of those libraries we do not offer: why, and what to do instead
    refused_options: ClassVar[Mapping[str, str]] = {}
    #: durations in seconds (a value that looks like milliseconds is refused)
    seconds_options: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _normalize(cls, data)


#: Node's TLS options that hold PEM text where we take a file path
_PEM_TEXT = "Node's tls.{0} holds PEM text; save it to a file and set tls.{0}_file"


class TLSOptions(_Options):
    """Certificate checking and client identity, shared by STARTTLS and implicit TLS."""

    option_aliases: ClassVar[Mapping[str, Alias]] = {
        "rejectUnauthorized": Alias("verify"),
        "minVersion": Alias("min_version"),
    }
    refused_options: ClassVar[Mapping[str, str]] = {
        "ca": _PEM_TEXT.format("ca"),
        "cert": _PEM_TEXT.format("cert"),
        "key": _PEM_TEXT.format("key"),
        "ciphers": "the cipher list is Python's ssl default (TLS 1.2+ only); "
        "set tls.min_version = 'TLSv1.3' to narrow it",
    }

    verify: bool = True
    ca_file: Path | None = None
    #: the name sent in SNI and checked in the certificate (default: ``host``)
    servername: str | None = None
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("servername")
    @classmethod
    def _servername(cls, value: str | None) -> str | None:
        if value is not None and (not value or _CONTROL.search(value)):
            raise ValueError("servername must be a host name without spaces or controls")
        return value

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSOptions:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class OAuth2Options(_Options):
    """Where XOAUTH2 access tokens come from: one of three sources.

    * ``access_token`` alone: a static token; when the server refuses it there is
      nothing to refresh, so that is an AuthError.
    * ``token_url`` (or ``preset``) + ``client_id`` + ``client_secret`` +
      ``refresh_token``: a refresh-token grant. ``access_token`` may be given too, as the
      first token to try.
    * ``callback``: an async callable of your own (programmatic config only).
    """

    option_aliases: ClassVar[Mapping[str, Alias]] = {
        "accessToken": Alias("access_token"),
        "refreshToken": Alias("refresh_token"),
        "clientId": Alias("client_id"),
        "clientSecret": Alias("client_secret"),
        "accessUrl": Alias("token_url"),
        # Nodemailer's expires is a JavaScript timestamp: milliseconds since the epoch
        "expires": Alias("expires_at", milliseconds=True),
    }
    refused_options: ClassVar[Mapping[str, str]] = {
        "serviceClient": "service-account (2LO) tokens are not fetched for you: obtain "
        "them in your code and pass oauth2.callback",
        "privateKey": "service-account (2LO) tokens are not fetched for you: obtain "
        "them in your code and pass oauth2.callback",
    }
    seconds_options: ClassVar[frozenset[str]] = frozenset({"token_timeout"})

    access_token: SecretStr | None = None
    #: when ``access_token`` expires, in seconds since the epoch (refreshed before then)
    expires_at: float | None = None
    token_url: str | None = None
    preset: Literal["google", "microsoft"] | None = None
    tenant: str = "common"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    scope: str | None = None
    callback: TokenCallback | None = Field(default=None, exclude=True, repr=False)
    #: refresh a token this many seconds before it expires
    refresh_margin: float = Field(default=60.0, ge=0)
    #: timeout of one request to the token endpoint, seconds
    token_timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> OAuth2Options:
        grant = self.token_url is not None or self.preset is not None
        if grant and self.callback is not None:
            raise ValueError("give either a token endpoint (token_url/preset) or callback")
        if grant:
            missing = [
                n
                for n in ("client_id", "client_secret", "refresh_token")
                if getattr(self, n) is None
            ]
            if missing:
                raise ValueError(f"a refresh-token grant needs {', '.join(missing)}")
        elif self.callback is None and self.access_token is None:
            raise ValueError(
                "oauth2 needs access_token, a token endpoint (token_url or preset with "
                "client_id, client_secret, refresh_token), or callback"
            )
        if self.token_url is not None:
            url = urlsplit(self.token_url)
            if url.scheme == "http" and not is_loopback(url.hostname or ""):
                raise ValueError(
                    "token_url must be https:// (a refresh-token grant sends client_secret "
                    "and refresh_token); http:// is allowed only for loopback hosts"
                )
            if url.scheme not in ("https", "http") or not url.hostname:
                raise ValueError("token_url must be an https:// URL")
        return self

    @property
    def endpoint(self) -> str | None:
        """The token URL, from ``token_url`` or the preset."""
        if self.token_url is not None:
            return self.token_url
        if self.preset is not None:
            return OAUTH2_PRESETS[self.preset]["token_url"].format(tenant=self.tenant)
        return None

    @property
    def effective_scope(self) -> str | None:
        if self.scope is not None:
            return self.scope
        if self.preset is not None:
            return OAUTH2_PRESETS[self.preset].get("scope")
        return None


class AuthOptions(_Options):
    """``user`` with either ``password`` (PLAIN or LOGIN) or ``oauth2`` (XOAUTH2)."""

    option_aliases: ClassVar[Mapping[str, Alias]] = {"pass": Alias("password")}

    @model_validator(mode="before")
    @classmethod
    def _nodemailer_type(cls, data: Any) -> Any:
        """Nodemailer's ``{type: 'oauth2', user, accessToken, ...}``: a flat OAuth2 block.

        Its OAuth2 keys move into ``oauth2``; a refresh-token grant without ``accessUrl``
        uses Google's endpoint, as Nodemailer does.
        """
        if not isinstance(data, Mapping) or "type" not in data:
            return data
        data = dict(data)
        kind = data.pop("type")
        if not isinstance(kind, str) or kind.lower() not in ("login", "oauth2"):
            raise ValueError("auth.type must be 'login' (user and pass) or 'oauth2'")
        if kind.lower() == "login":
            return data
        if "oauth2" in data:
            raise ValueError("give either auth.type = 'oauth2' with its keys, or auth.oauth2")
        moved = set(OAuth2Options.option_aliases) | set(OAuth2Options.refused_options)
        moved |= set(OAuth2Options.model_fields)
        oauth2 = {k: data.pop(k) for k in list(data) if k in moved}
        if (
            "refreshToken" in oauth2
            and "accessUrl" not in oauth2
            and not {"token_url", "preset", "callback"} & set(oauth2)
        ):
            oauth2["preset"] = "google"
        data["oauth2"] = oauth2
        return data

    user: str
    password: SecretStr | None = None
    oauth2: OAuth2Options | None = None
    #: force one mechanism; by default PLAIN, then LOGIN, as the server offers them
    method: Literal["PLAIN", "LOGIN", "XOAUTH2"] | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not value or re.search("[\x00-\x1f\x7f]", value):
            raise ValueError("user must be non-empty, without control characters")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> AuthOptions:
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("auth needs exactly one of password or oauth2")
        if self.oauth2 is not None and self.method not in (None, "XOAUTH2"):
            raise ValueError("oauth2 authenticates with XOAUTH2 only")
        if self.password is not None and self.method == "XOAUTH2":
            raise ValueError("method XOAUTH2 needs oauth2, not password")
        return self


def _no_login(data: Any) -> Any:
    """Empty credentials (MailHog's "leave empty", ``auth: {user: "", pass: ""}``) mean
    no AUTH, as in Nodemailer; one empty and one given is still an error."""
    if not isinstance(data, Mapping) or not isinstance(data.get("auth"), Mapping):
        return data
    auth = data["auth"]
    if set(auth) <= {"user", "pass", "password"} and all(v in ("", None) for v in auth.values()):
        return {k: v for k, v in data.items() if k != "auth"}
    return data


#: what settings tables call the connection's security, and which of ours it is
_TLS_MODES = {
    "ssl": "secure: true (implicit TLS from the first byte, usually port 465)",
    "ssl/tls": "secure: true (implicit TLS from the first byte, usually port 465)",
    "implicit": "secure: true (implicit TLS from the first byte, usually port 465)",
    "tls": "secure: false (STARTTLS, usually port 587; require_tls: true insists on it)",
    "starttls": "secure: false (STARTTLS, usually port 587; require_tls: true insists on it)",
    "none": "secure: false and ignore_tls: true (no encryption: loopback servers only)",
}


def _tls_mode(data: Any) -> Any:
    """``tls: "SSL"`` (a mode, as settings tables name it) is refused with our spelling;
    our ``tls`` holds certificate options."""
    if not isinstance(data, Mapping) or not isinstance(data.get("tls"), str | bool):
        return data
    mode = str(data["tls"]).strip().lower()
    ours = _TLS_MODES.get(mode, _TLS_MODES["ssl"] + "; or " + _TLS_MODES["tls"])
    raise ValueError(
        "tls takes certificate options (verify, ca_file, servername, ...), not a mode; "
        f"for this mode write {ours}"
    )


def _nodemailer_logger(data: Any) -> Any:
    """Nodemailer's ``logger: true`` (log to the console) is dropped: our logs always go
    to Python logging (the ``mailer`` loggers), where handlers and levels are set. Its
    ``debug: true`` is our ``debug`` (the SMTP transcript)."""
    if not isinstance(data, Mapping) or "logger" not in data:
        return data
    if not isinstance(data["logger"], bool):
        raise ValueError(
            "logger takes true or false here (a logger object is not accepted): logs go to "
            "Python logging, the 'mailer' loggers; set debug = true for the SMTP transcript"
        )
    return {k: v for k, v in data.items() if k != "logger"}


def _rate_aliases(data: Any) -> Any:
    """Nodemailer's ``rateLimit`` (messages) per ``rateDelta`` (milliseconds, default
    1000) is our ``rate_limit = {messages, per}`` (seconds)."""
    if not isinstance(data, Mapping) or not ({"rateLimit", "rateDelta"} & set(data)):
        return data
    data = dict(data)
    messages, delta = data.pop("rateLimit", None), data.pop("rateDelta", None)
    if "rate_limit" in data:
        raise ValueError(
            "rateLimit/rateDelta and rate_limit are the same option; give only one "
            "(rate_limit = {messages, per} is our name, per in seconds)"
        )
    if messages is None or messages is False:
        if delta is not None:
            raise ValueError("rateDelta needs rateLimit (the messages allowed per rateDelta)")
        return data
    per = 1.0
    if delta is not None:
        number = delta if isinstance(delta, int | float) and not isinstance(delta, bool) else None
        if number is None:
            raise ValueError("rateDelta must be a number of milliseconds")
        per = number / 1000.0
    data["rate_limit"] = {"messages": messages, "per": per}
    return data


class SMTPConfig(ProviderConfig):
    """Every option of the SMTP provider. Times are seconds."""

    option_aliases: ClassVar[Mapping[str, Alias]] = {
        "requireTLS": Alias("require_tls"),
        "ignoreTLS": Alias("ignore_tls"),
        "maxConnections": Alias("max_connections"),
        "maxMessages": Alias("max_messages"),
        "connectionTimeout": Alias("connection_timeout", milliseconds=True),
        "greetingTimeout": Alias("greeting_timeout", milliseconds=True),
        "socketTimeout": Alias("socket_timeout", milliseconds=True),
    }
    refused_options: ClassVar[Mapping[str, str]] = {
        "service": "well-known service names are not built in; set host and port "
        "(e.g. smtp.gmail.com and 587) from your provider's page",
        "lmtp": "LMTP is not offered; deliver over SMTP",
        "localAddress": "binding a local interface is not offered; the OS picks it",
        "dnsTimeout": "DNS lookups count against connection_timeout",
        "disableFileAccess": "nothing is read from files or URLs but the attachment paths "
        "your code passes",
        "disableUrlAccess": "nothing is read from files or URLs but the attachment paths "
        "your code passes",
        "socket": "socket injection is not offered; give host and port",
        "connection": "socket injection is not offered; give host and port",
    }
    seconds_options: ClassVar[frozenset[str]] = frozenset(
        {"connection_timeout", "greeting_timeout", "socket_timeout"}
    )
    #: settings-table names of the login (lower-cased), for "it belongs at"
    option_moves: ClassVar[Mapping[str, str]] = {
        "username": "auth.user",
        "user": "auth.user",
        "password": "auth.password",
        "pass": "auth.password",
    }

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "authMethod" in data:
            # Nodemailer's top-level authMethod is our auth.method
            data = dict(data)
            method = data.pop("authMethod")
            auth = data.get("auth")
            if not isinstance(auth, Mapping):
                raise ValueError("authMethod needs auth (user and pass)")
            if "method" in auth:
                raise ValueError("authMethod and auth.method are the same option; give one")
            data["auth"] = {**auth, "method": method.upper() if isinstance(method, str) else method}
        return _normalize(cls, _rate_aliases(_nodemailer_logger(_tls_mode(_no_login(data)))))

    host: str = "localhost"
    #: 465 when ``secure``, else 587
    port: int | None = Field(default=None, ge=1, le=65535)
    #: implicit TLS from the first byte; default true on port 465
    secure: bool | None = None
    #: refuse to go on when STARTTLS is not offered; default true for every host but
    #: loopback addresses and ``localhost`` (set false to allow plaintext, logged)
    require_tls: bool | None = None
    #: never try STARTTLS
    ignore_tls: bool = False
    #: allow AUTH on a connection without TLS (trusted loopback servers only)
    allow_plaintext_auth: bool = False
    #: the EHLO name (default: this machine's host name)
    name: str | None = None
    auth: AuthOptions | None = None
    pool: bool = False
    max_connections: int = Field(default=5, ge=1, le=1000)
    max_messages: int = Field(default=100, ge=1)
    #: a pooled connection idle this long is closed instead of reused
    idle_timeout: float = Field(default=30.0, gt=0)
    #: TCP connect, and the TLS handshake of STARTTLS
    connection_timeout: float = Field(default=10.0, gt=0)
    #: wait for the 220 greeting (with secure=True, the TLS handshake too)
    greeting_timeout: float = Field(default=10.0, gt=0)
    #: wait for each reply, including the one after the message
    socket_timeout: float = Field(default=30.0, gt=0)
    tls: TLSOptions = Field(default_factory=TLSOptions)
    #: DKIM-sign every message (a message's own ``dkim`` wins)
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    #: connect through a proxy: ``socks5://``, ``socks5h://``, ``socks4://``,
    #: ``socks4a://`` or ``http://`` (CONNECT), ``[user:password@]host:port``; a secret
    proxy: SecretStr | None = None
    #: log each command and reply at DEBUG on ``mailer.providers.smtp.transcript`` (AUTH
    #: data redacted, the message body as its size only)
    debug: bool = False

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_proxy(value.get_secret_value())  # ValueError, never echoing the URL
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or _CONTROL.search(value):
            raise ValueError("host must be a host name or IP address, without spaces")
        return value.strip("[]") if ":" in value else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # fullmatch: with match(), "$" also matches before a trailing "\n" ("host\n")
        if value is not None and not _EHLO_NAME.fullmatch(value):
            raise ValueError(
                "name (the EHLO name) must be a host name or address literal, ASCII, "
                "without spaces or control characters"
            )
        return value

    @model_validator(mode="after")
    def _resolve(self) -> SMTPConfig:
        secure = self.secure if self.secure is not None else self.port == 465
        port = self.port if self.port is not None else (465 if secure else 587)
        object.__setattr__(self, "secure", secure)
        object.__setattr__(self, "port", port)
        if self.require_tls and self.ignore_tls:
            raise ValueError("require_tls and ignore_tls contradict each other")
        if self.require_tls is None:
            # TLS by default: a stripped STARTTLS must not send mail in plaintext silently
            require = not secure and not self.ignore_tls and not is_loopback(self.host)
            object.__setattr__(self, "require_tls", require)
        if secure and self.ignore_tls:
            raise ValueError("ignore_tls has no meaning with secure=True (implicit TLS)")
        if self.auth is not None and self.ignore_tls and not self.allow_plaintext_auth:
            raise ValueError(
                "auth with ignore_tls=True would send credentials in plaintext; drop "
                "ignore_tls, or set allow_plaintext_auth=True for a trusted local server"
            )
        return self

    @property
    def implicit_tls(self) -> bool:
        return bool(self.secure)

    @property
    def port_number(self) -> int:
        assert self.port is not None  # resolved by the validator
        return self.port

    @property
    def proxy_url(self) -> ProxyURL | None:
        return parse_proxy(self.proxy.get_secret_value()) if self.proxy is not None else None

    @property
    def tls_name(self) -> str:
        """The name for SNI and the certificate check."""
        return self.tls.servername or self.host


_URL_BOOL_OR_NUMBER = {
    "pool", "secure", "require_tls", "ignore_tls", "allow_plaintext_auth", "name",
    "max_connections", "max_messages", "idle_timeout", "connection_timeout",
    "greeting_timeout", "socket_timeout", "proxy", "debug",
}  # fmt: skip


def config_from_url(url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
    """``smtp://user:pass@host:587?pool=true`` and ``smtps://...`` to a config mapping.

    Query keys are option names; ``tls.<key>`` sets a TLS option, ``auth.method`` the
    mechanism, and ``ehlo_name`` the EHLO name (in a Mailer DSN ``name`` is taken: it
    names the provider). User and password are percent-decoded, as in Nodemailer URLs.
    """
    scheme = url.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ConfigError(f"an SMTP URL starts with smtp:// or smtps://, not {scheme}://")
    try:
        port = url.port
    except ValueError:
        raise ConfigError("the SMTP URL has an invalid port") from None
    config: dict[str, Any] = {}
    if url.hostname:
        config["host"] = url.hostname
    if port is not None:
        config["port"] = port
    if scheme == "smtps":
        config["secure"] = True
    tls: dict[str, Any] = {}
    auth_method: str | None = None
    for key, value in params.items():
        if key.startswith("tls."):
            tls[key[4:]] = value
        elif key == "ehlo_name":  # in a Mailer DSN, "name" is the provider's name
            config["name"] = value
        elif key == "auth.method":
            auth_method = value
        elif key in _URL_BOOL_OR_NUMBER or key in SMTPConfig.option_aliases:
            if key == "secure" and scheme == "smtps" and value.lower() in ("false", "0", "no"):
                raise ConfigError("smtps:// means implicit TLS; it cannot have secure=false")
            config[key] = value
        else:
            known = [*_URL_BOOL_OR_NUMBER, *SMTPConfig.option_aliases, "ehlo_name", "auth.method"]
            near = close_names(key, known)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown SMTP URL option {key!r}{hint}")
    if tls:
        config["tls"] = tls
    if url.username is not None:
        auth: dict[str, Any] = {"user": unquote(url.username)}
        if url.password is not None:
            auth["password"] = unquote(url.password)
        if auth_method is not None:
            auth["method"] = auth_method
        config["auth"] = auth
    elif auth_method is not None:
        raise ConfigError("auth.method needs a user in the URL")
    return config
