"""``proxy``: SMTP through real SOCKS and HTTP CONNECT proxies on loopback.

Every send here goes client -> proxy -> aiosmtpd with STARTTLS, the client naming the
test certificate's host, so the test also shows that SNI and the certificate check are
end to end through the proxy. The proxies record what they were asked for: a host name
(the proxy resolves: socks5h, socks4a, http) or an address (we resolved: socks5, socks4).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailer import ConfigError, Mailer, Message
from mailer._config import parse_dsn
from mailer._errors import AuthError, TransientError
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp._proxy import parse_proxy
from mailer.testing import TLS_NAME, HTTPConnectProxy, SMTPTestServer, SOCKSProxy, closed_port

pytestmark = pytest.mark.anyio

USER, PASSWORD = "proxyuser", "pr0xy-SECRET-pw"


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject="s", text="x")


@pytest.fixture
def resolve_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS_NAME resolves to 127.0.0.1 on this side (for socks5:// and socks4://)."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == TLS_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.fixture
def proxies() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(kind: type[SOCKSProxy] | type[HTTPConnectProxy], **kwargs: Any) -> Any:
        proxy = kind(resolve={TLS_NAME: "127.0.0.1"}, **kwargs)
        proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def via(server: SMTPTestServer, proxy_url: str, **overrides: Any) -> dict[str, Any]:
    """STARTTLS to TLS_NAME (so SNI and the certificate name are checked), via a proxy."""
    return server.named_config(proxy=proxy_url, **overrides)


@pytest.mark.parametrize(
    ("scheme", "asked_for"),
    [
        ("socks5h", TLS_NAME),
        ("socks5", "127.0.0.1"),
        ("socks4a", TLS_NAME),
        ("socks4", "127.0.0.1"),
    ],
)
@pytest.mark.usefixtures("resolve_here")
async def test_send_through_socks(
    starttls_server: SMTPTestServer, proxies: Callable[..., Any], scheme: str, asked_for: str
) -> None:
    proxy = proxies(SOCKSProxy)
    url = f"{scheme}://127.0.0.1:{proxy.port}"
    result = await SMTPProvider.from_config("p", via(starttls_server, url)).send(message())
    assert result.accepted == ["u@example.org"]
    assert proxy.requests == [(asked_for, starttls_server.port)]
    assert starttls_server.state.sni == [TLS_NAME]  # end-to-end TLS, through the proxy
    assert len(starttls_server.state.messages) == 1


@pytest.mark.parametrize(("kind", "scheme"), [(SOCKSProxy, "socks5h"), (HTTPConnectProxy, "http")])
async def test_proxy_with_username_and_password(
    starttls_server: SMTPTestServer, proxies: Callable[..., Any], kind: type, scheme: str
) -> None:
    proxy = proxies(kind, user=USER, password=PASSWORD)
    url = f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}"
    result = await SMTPProvider.from_config("p", via(starttls_server, url)).send(message())
    assert result.accepted == ["u@example.org"]
    assert proxy.requests == [(TLS_NAME, starttls_server.port)]
    assert proxy.auth == [(USER, PASSWORD)]
    assert starttls_server.state.sni == [TLS_NAME]
    assert len(starttls_server.state.messages) == 1


async def test_implicit_tls_through_a_proxy(
    tls_server: SMTPTestServer, proxies: Callable[..., Any]
) -> None:
    proxy = proxies(HTTPConnectProxy)
    url = f"http://127.0.0.1:{proxy.port}"
    await SMTPProvider.from_config("p", via(tls_server, url)).send(message())
    assert tls_server.state.sni == [TLS_NAME]
    assert len(tls_server.state.messages) == 1


# ------------------------------------------------------------------------ failures


@pytest.mark.parametrize("kind", [SOCKSProxy, HTTPConnectProxy])
@pytest.mark.parametrize("given", [None, "wrong-password"])
async def test_refused_proxy_credentials_are_an_auth_error(
    starttls_server: SMTPTestServer,
    proxies: Callable[..., Any],
    kind: Any,
    given: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = proxies(kind, user=USER, password=PASSWORD)
    scheme = "socks5h" if kind is SOCKSProxy else "http"
    creds = f"{USER}:{given}@" if given else ""
    url = f"{scheme}://{creds}127.0.0.1:{proxy.port}"
    caplog.set_level(logging.DEBUG, logger="mailer")
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", via(starttls_server, url, debug=True)).send(message())
    text = str(info.value)
    assert f"proxy {scheme}://{'***@' if given else ''}127.0.0.1:{proxy.port} refused" in text
    assert "check the user and password in the proxy URL" in text
    assert info.value.retry_here is False
    assert starttls_server.state.connections == 0
    for shown in (text, repr(info.value), caplog.text):
        assert "wrong-password" not in shown and USER not in shown


async def test_proxy_down_fails_over_like_a_refused_connection(
    starttls_server: SMTPTestServer,
) -> None:
    url = f"socks5h://{USER}:{PASSWORD}@127.0.0.1:{closed_port()}"
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", via(starttls_server, url)).send(message())
    text = str(info.value)
    assert text.startswith("[p] cannot connect to proxy socks5h://***@127.0.0.1:")
    assert "Connection refused" in text
    assert "(for mail.test.example:" in text and "is the proxy up" in text
    assert PASSWORD not in text and USER not in text

    # and a Mailer fails over to the next provider
    mailer = Mailer(
        providers=[
            SMTPProvider.from_config("proxied", via(starttls_server, url)),
            SMTPProvider.from_config("direct", starttls_server.config()),
        ]
    )
    result = await mailer.send(message())
    assert result.provider == "direct"
    assert [a.provider for a in result.attempts][-1] == "direct"
    await mailer.aclose()


async def test_proxy_cannot_reach_the_server(
    proxies: Callable[..., Any], starttls_server: SMTPTestServer
) -> None:
    proxy = proxies(SOCKSProxy)
    config = via(starttls_server, f"socks5h://127.0.0.1:{proxy.port}", port=closed_port())
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert f"proxy socks5h://127.0.0.1:{proxy.port} could not connect to mail.test.example:" in (
        str(info.value)
    )


async def test_not_a_proxy_at_that_port(starttls_server: SMTPTestServer) -> None:
    """An SMTP server where the proxy should be: the handshake makes no sense."""
    config = via(starttls_server, f"http://127.0.0.1:{starttls_server.port}")
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert "did not answer as a http:// proxy" in str(info.value)
    assert info.value.retry_here is False


# -------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://h:1", "proxy scheme 'ftp' is not supported"),
        ("https://h:443", "TLS to the proxy is not offered"),
        ("socks5://h", "needs a port"),
        ("socks5://:1080", "has no host"),
        ("socks5://u@h:1080", "needs both user and password"),
        ("socks4://u:p@h:1080", "SOCKS4 has a user id but no password"),
        ("http://h:3128/path", "no path, query or fragment"),
    ],
)
def test_bad_proxy_urls(url: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", {"host": "mail.example.com", "proxy": url})
    assert error in str(info.value)


def test_the_proxy_url_is_a_secret() -> None:
    url = f"socks5://{USER}:{PASSWORD}@proxy.example:1080"
    provider = SMTPProvider.from_config("p", {"host": "mail.example.com", "proxy": url})
    assert PASSWORD not in repr(provider.config) and USER not in repr(provider.config)
    assert repr(parse_proxy(url)) == "ProxyURL('socks5://***@proxy.example:1080')"
    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", {"proxy": f"socks5://{USER}:{PASSWORD}@h"})
    assert PASSWORD not in str(info.value)


def test_proxy_in_an_smtp_url() -> None:
    entry = parse_dsn(
        "smtp://mail.example.com:587?proxy=socks5h%3A%2F%2F127.0.0.1%3A1080&debug=true"
    )
    provider = SMTPProvider.from_config("p", entry["config"])
    assert provider.config.proxy_url is not None
    assert provider.config.proxy_url.shown == "socks5h://127.0.0.1:1080"
    assert provider.config.debug is True


def test_missing_python_socks_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "python_socks", None)
    monkeypatch.setitem(sys.modules, "python_socks.async_.asyncio", None)
    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", {"host": "mail.example.com", "proxy": "socks5://h:1080"})
    assert "pip install 'mailer-failover[proxy]'" in str(info.value)
