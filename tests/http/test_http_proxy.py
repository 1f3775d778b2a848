"""HTTP providers through a proxy (the ``proxy`` option, httpx's ``proxy=``).

Real parts: a local HTTPS API (mailer.testing, with the session's trustme
certificate for TLS_NAME) behind the kit's real SOCKS5 and HTTP CONNECT proxies, which
record every destination and credential they were given. TLS runs end to end: the
certificate is checked for TLS_NAME, which only the proxy resolves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from mailer import ConfigError, Mailer, Message, TransientError
from mailer.providers._resend import ResendProvider
from mailer.testing import TLS_NAME, Certs, HTTPConnectProxy, ScriptedProvider, SOCKSProxy, serve

pytestmark = pytest.mark.anyio

SECRET = "proxy-pass-5521"


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject="s", text="x")


@pytest.fixture(params=["http", "socks5h"])
def proxy(request: pytest.FixtureRequest) -> Iterator[Any]:
    kind = HTTPConnectProxy if request.param == "http" else SOCKSProxy
    relay = kind(user="mailer", password=SECRET, resolve={TLS_NAME: "127.0.0.1"})
    relay.scheme = request.param
    relay.start()
    yield relay
    relay.stop()


def resend(port: int, ca: Certs, proxy_url: str) -> ResendProvider:
    return ResendProvider.from_config("resend", {
        "api_key": "re_key_1234", "base_url": f"https://{TLS_NAME}:{port}",
        "ca_file": str(ca.ca_file), "proxy": proxy_url, "timeout": 5,
    })  # fmt: skip


async def test_requests_go_through_the_proxy_with_tls_end_to_end(
    certs: Certs,
    proxy: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{proxy.scheme}://mailer:{SECRET}@127.0.0.1:{proxy.port}"
    async with serve("ok", tls=certs.server_context()) as api:
        provider = resend(api.port, certs, url)
        result = await provider.send(message())
        await provider.aclose()
    assert result.provider_message_id == "real-1" and api.requests == 1
    assert proxy.requests == [(TLS_NAME, api.port)]  # the proxy resolved the name
    assert proxy.auth == [("mailer", SECRET)]
    assert SECRET not in repr(provider) and SECRET not in repr(provider.config)
    assert SECRET not in caplog.text


async def test_a_refused_proxy_login_or_a_dead_proxy_fails_over(
    certs: Certs,
    proxy: Any,
) -> None:
    backup = ScriptedProvider("backup")
    async with serve("ok", tls=certs.server_context()) as api:
        wrong = resend(
            api.port, certs, f"{proxy.scheme}://mailer:wrong-pass-1@127.0.0.1:{proxy.port}"
        )
        mailer = Mailer([wrong, backup], retry={"attempts": 1})
        async with mailer:
            result = await mailer.send(message())
        assert result.provider == "backup" and api.requests == 0
        # nothing listens at the proxy's address any more
        proxy.stop()
        dead = resend(api.port, certs, f"{proxy.scheme}://127.0.0.1:{proxy.port}")
        with pytest.raises(TransientError) as caught:
            await dead.send(message())
        await dead.aclose()
        assert api.requests == 0
    assert SECRET not in str(caught.value)


def test_proxy_urls_are_checked_and_never_echoed() -> None:
    def build(proxy: str) -> None:
        ResendProvider.from_config("resend", {"api_key": "re_key_1234", "proxy": proxy})

    with pytest.raises(ConfigError, match="not supported here") as caught:
        build("socks4://user@127.0.0.1:1080")
    with pytest.raises(ConfigError, match="needs a port") as caught:
        build(f"http://user:{SECRET}@proxy.internal")
    assert SECRET not in str(caught.value)
