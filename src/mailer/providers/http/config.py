"""What every HTTP adapter is configured with, and how a DSN becomes that config."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator

from ..._errors import ConfigError
from ..._log import get_logger
from ..._provider import ProviderConfig
from ..._proxy_url import parse_proxy_url

__all__ = ["HTTPConfig", "key_config", "require", "url_base", "url_credentials"]

#: the proxies httpx can use (``socks5h://`` resolves at the proxy, as curl's)
_HTTP_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
#: httpcore's loggers for proxied connections: at DEBUG, the SOCKS trace shows the
#: proxy's user and password, so our redaction filter goes on them too
_HTTPCORE_PROXY_LOGGERS = ("httpcore.socks", "httpcore.proxy")


class HTTPConfig(ProviderConfig):
    """Options every HTTP adapter takes.

    ``base_url`` points an adapter at an EU region, a proxy or a local fake;
    ``timeout`` bounds one send's requests to this API, a try and its same-provider
    retries together (the Mailer's ``send_timeout`` may shorten it);
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
    #: template name -> this API's stored template (a SendGrid ``d-...`` id, a Postmark
    #: alias or numeric id, ...): a Message naming one of these sends through the API's
    #: template endpoint with ``template_data``; any other template is rendered locally
    templates: dict[str, str] = Field(default_factory=dict)

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # parsing registers the credentials with the redactor
            proxy = parse_proxy_url(value.get_secret_value(), _HTTP_PROXY_SCHEMES)
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


def require(condition: bool, text: str) -> None:
    """Raise ConfigError: DSN helpers use it for missing parts of a URL."""
    if not condition:
        raise ConfigError(text)


def url_credentials(url: SplitResult) -> tuple[str | None, str | None]:
    """The (percent-decoded) user and password of a DSN; secrets often hold ``/``."""
    user = unquote(url.username) if url.username else None
    password = unquote(url.password) if url.password else None
    return user, password


def url_base(url: SplitResult) -> dict[str, Any]:
    """``base_url`` from a DSN's host, unless the host is the placeholder ``default``."""
    host = url.hostname
    if not host or host == "default":
        return {}
    port = f":{url.port}" if url.port else ""
    return {"base_url": f"https://{host}{port}"}


def key_config(url: SplitResult, params: dict[str, str], field: str) -> dict[str, Any]:
    """``type://SECRET@default`` (or ``type://user:SECRET@host``) for single-key APIs: the
    secret is the password when there is one (``apikey:KEY@``), else the user."""
    user, password = url_credentials(url)
    secret = password or user
    require(
        bool(secret),
        f"{url.scheme} URL needs the {field.replace('_', ' ')}: "
        f"{url.scheme}://{field.upper()}@default",
    )
    return {**params, **url_base(url), field: secret}
