"""SMTP through a SOCKS or HTTP CONNECT proxy (Nodemailer's ``proxy`` option).

The proxy hands back a plain TCP socket connected (through it) to the SMTP server;
from there the session is the same as a direct one: aiosmtplib runs implicit TLS or
STARTTLS on that socket with the configured server name (SNI and the certificate check
are end to end, the proxy sees only ciphertext after STARTTLS).

Schemes follow curl's (and httpx's) meaning, so one URL means the same on every
provider: ``socks5://`` resolves the SMTP host here and gives the proxy an address;
``socks5h://`` lets the proxy resolve it (what a proxy into a private network needs);
``socks4://`` resolves here, ``socks4a://`` at the proxy; ``http://`` is HTTP CONNECT
(the proxy resolves). ``user:password@`` in the URL is sent to the proxy (SOCKS5
username/password, SOCKS4 user id, HTTP ``Proxy-Authorization: Basic``). The URL is a
secret: the config holds it as a SecretStr, and errors show :attr:`ProxyURL.shown`,
which never has the credentials.

python-socks does the SOCKS protocols; it is the ``proxy`` extra and imported only
when a SOCKS connection is made (its absence is a ConfigError when the provider is
built). HTTP CONNECT is done here: python-socks reads the proxy's answer with one
64 KiB ``recv``, which also swallows whatever follows it, and in SMTP the server speaks
first: its 220 greeting, relayed right behind the proxy's "200", would be lost and the
session would hang until greeting_timeout. :func:`_http_connect` reads the answer up to
its blank line and not one byte further (and reaches the proxy with Happy Eyeballs).
Failures of either kind become :class:`ProxyFailure`, so that
:func:`.classify.map_exception` (the one table of outcomes) can name what went wrong
without importing python-socks.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Literal

from ..._proxy_url import ProxyURL, parse_proxy_url
from ..._text import QUOTE, REASON, clip
from . import _happy

__all__ = ["SCHEMES", "ProxyFailure", "ProxyURL", "connect", "parse_proxy", "require_library"]

#: scheme -> (python-socks proxy type name, whether the proxy resolves the host name)
SCHEMES: dict[str, tuple[str, bool]] = {
    "socks5": ("SOCKS5", False),
    "socks5h": ("SOCKS5", True),
    "socks4": ("SOCKS4", False),
    "socks4a": ("SOCKS4", True),
    "http": ("HTTP", True),
}


def parse_proxy(text: str) -> ProxyURL:
    """An SMTP proxy URL, checked; ValueError (never echoing the URL)."""
    return parse_proxy_url(
        text,
        SCHEMES,
        https_hint=(
            " (TLS to the proxy is not offered; STARTTLS or implicit TLS to the SMTP server "
            "still encrypts the session end to end through an http:// proxy)"
        ),
    )


#: what went wrong, for the classifier
FailureKind = Literal["unreachable", "auth", "rejected", "protocol"]

_INSTALL = "the proxy option needs python-socks: pip install 'mailer-failover[proxy]'"


def require_library(proxy: ProxyURL) -> None:
    """Raise ImportError (with how to install it) when a SOCKS proxy needs python-socks
    and it is missing."""
    if proxy.scheme == "http":
        return
    try:
        import python_socks.async_.asyncio  # noqa: F401
    except ImportError:
        raise ImportError(_INSTALL) from None


class ProxyFailure(OSError):
    """The proxy did not give us a connection to the SMTP server; ``kind`` says why."""

    def __init__(self, kind: FailureKind, proxy: ProxyURL, detail: str) -> None:
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.proxy = proxy
        self.detail = detail


#: SOCKS4 reply codes about identd: the proxy did not accept who we are
_SOCKS4_IDENT = {0x5C, 0x5D}


async def connect(proxy: ProxyURL, host: str, port: int) -> socket.socket:
    """A socket connected through ``proxy`` to ``host:port``; raises ProxyFailure.

    The caller bounds this with its own timeout (connection_timeout, cut short by the
    pre-commit budget), so python-socks' own timer is set out of the way.
    """
    if proxy.scheme == "http":
        return await _http_connect(proxy, host, port)
    from python_socks import ProxyConnectionError, ProxyError, ProxyType
    from python_socks.async_.asyncio import Proxy

    kind_name, remote_dns = SCHEMES[proxy.scheme]
    client = Proxy(
        ProxyType[kind_name],
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        rdns=remote_dns,
    )
    try:
        sock: socket.socket = await client.connect(host, port, timeout=_NO_TIMER)
    except ProxyConnectionError as exc:
        raise ProxyFailure("unreachable", proxy, _reason(exc)) from exc.__cause__
    except ProxyError as exc:
        raise _reply_failure(proxy, exc, getattr(exc, "error_code", None)) from None
    except socket.gaierror:
        raise  # socks5:// or socks4://: the SMTP host did not resolve here
    except OSError as exc:  # the proxy dropped the connection mid-handshake
        reason = _happy.describe(exc)
        raise ProxyFailure(
            "protocol", proxy, f"connection lost in the handshake: {reason}"
        ) from exc
    sock.setblocking(False)
    return sock


#: python-socks wants a number; ours is the outer timeout (asyncio.wait_for)
_NO_TIMER = 24 * 3600.0


def _reply_failure(proxy: ProxyURL, exc: Exception, code: int | None) -> ProxyFailure:
    text = str(exc)
    lowered = text.lower()
    if (
        code == 407
        or "authentication" in lowered
        or (proxy.scheme.startswith("socks4") and code in _SOCKS4_IDENT)
    ):
        return ProxyFailure("auth", proxy, text)
    if code is not None:
        return ProxyFailure("rejected", proxy, text)
    return ProxyFailure("protocol", proxy, text or type(exc).__name__)


#: the most of a CONNECT answer we read before calling it malformed
_MAX_HEAD = 16 * 1024


async def _http_connect(proxy: ProxyURL, host: str, port: int) -> socket.socket:
    """HTTP CONNECT (RFC 9110 section 9.3.6), Basic credentials when the URL has them."""
    loop = asyncio.get_running_loop()
    try:
        sock, _ = await _happy.connect(proxy.host, proxy.port)
    except OSError as exc:
        reason = _reason(exc)
        raise ProxyFailure("unreachable", proxy, reason) from exc
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if proxy.username is not None:
            pair = f"{proxy.username}:{proxy.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await _read_head(loop, sock, proxy)
    except BaseException:
        sock.close()
        raise
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        sock.close()
        raise ProxyFailure("protocol", proxy, f"not an HTTP answer: {clip(status, QUOTE)!r}")
    code = int(parts[1])
    if 200 <= code < 300:
        return sock
    sock.close()
    kind: FailureKind = "auth" if code == 407 else "rejected"
    raise ProxyFailure(kind, proxy, f"HTTP {clip(status.partition(' ')[2], REASON)}")


async def _read_head(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: ProxyURL
) -> bytes:
    """The proxy's answer up to its blank line, one byte at a time: what follows is the
    SMTP server's greeting, which must stay in the socket for the SMTP client."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > _MAX_HEAD:
            raise ProxyFailure("protocol", proxy, "the CONNECT answer has no end")
        byte = await loop.sock_recv(sock, 1)
        if not byte:
            shown = clip(bytes(head).split(b"\r\n", 1)[0].decode("latin-1"), QUOTE)
            detail = f"closed the connection after {shown!r}" if head else "closed the connection"
            raise ProxyFailure("protocol", proxy, detail)
        head += byte
        if byte == b"\n" and head.count(b"\n") == 1 and not head.startswith(b"HTTP/"):
            # not an HTTP proxy (an SMTP server's 220, say): no blank line will come
            shown = clip(bytes(head).strip().decode("latin-1"), QUOTE)
            raise ProxyFailure("protocol", proxy, f"not an HTTP answer: {shown!r}")
    return bytes(head)


def _reason(exc: OSError) -> str:
    """The cause's own words: "Connection refused", "Name or service not known"."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    return _happy.describe(cause)
