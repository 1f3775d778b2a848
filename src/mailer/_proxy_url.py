"""Proxy URLs, one parser for every provider (``socks5://user:pass@host:1080``).

Schemes follow curl's (and httpx's) meaning, so one URL means the same on the SMTP and
the HTTP providers; each provider says which schemes it can use. The URL is a secret (it
may carry a password): errors show :attr:`ProxyURL.shown`, which never has the
credentials.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ._redact import redact_url, register_credentials

__all__ = ["ProxyURL", "parse_proxy_url"]


@dataclass(frozen=True)
class ProxyURL:
    """A parsed proxy URL. ``shown`` is the only form that goes into messages."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """``socks5://***@proxy:1080``: where, never who (:func:`mailer._redact.redact_url`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        creds = "user@" if self.username is not None or self.password is not None else ""
        return redact_url(f"{self.scheme}://{creds}{host}:{self.port}")

    def __repr__(self) -> str:
        return f"ProxyURL({self.shown!r})"


def parse_proxy_url(text: str, schemes: Collection[str], *, https_hint: str = "") -> ProxyURL:
    """A proxy URL whose scheme is one of ``schemes``, checked; ValueError (never echoing
    the URL, it may hold a password). ``https_hint`` explains a refused ``https://``."""
    try:
        url = urlsplit(text.strip())
        port = url.port
    except ValueError:
        raise ValueError(
            "proxy must be a URL like socks5://host:1080 (its port is invalid)"
        ) from None
    scheme = url.scheme.lower()
    if scheme not in schemes:
        offered = ", ".join(f"{name}://" for name in schemes)
        hint = https_hint if scheme == "https" else ""
        raise ValueError(
            f"proxy scheme {scheme or '(none)'!r} is not supported here: use {offered}{hint}"
        )
    if not url.hostname:
        raise ValueError(f"proxy URL {scheme}://... has no host")
    if port is None:
        raise ValueError(
            f"proxy URL {scheme}://{url.hostname} needs a port (e.g. :1080 for SOCKS, "
            ":3128 or :8080 for HTTP)"
        )
    if (url.path not in ("", "/")) or url.query or url.fragment:
        raise ValueError("a proxy URL has no path, query or fragment: scheme://host:port")
    username = unquote(url.username) if url.username is not None else None
    password = unquote(url.password) if url.password is not None else None
    if scheme.startswith("socks5") and (username is None) != (password is None):
        raise ValueError("a SOCKS5 proxy with authentication needs both user and password")
    if scheme.startswith("socks4") and password is not None:
        raise ValueError("SOCKS4 has a user id but no password: socks4://userid@host:port")
    register_credentials(username, password)  # in case a proxy or a trace echoes them
    return ProxyURL(scheme, url.hostname, port, username, password)
