"""TLS by default: a stripped STARTTLS is refused unless plaintext was asked for, and
plaintext, when asked for, is logged once per connection.

The client is pointed at a host *name* (``mail.test.example``, the test certificate's
name) so that the non-loopback default applies; the test resolves that name to the
man-in-the-middle proxy on 127.0.0.1, so nothing leaves the machine.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.smtp.network import StripTLSProxy

from mailer import ConfigError, Message
from mailer._errors import TransientError
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.config import SMTPConfig, is_loopback
from mailer.testing import TLS_NAME, SMTPTestServer

pytestmark = pytest.mark.anyio


def message(n: int = 0) -> Message:
    return Message(
        sender="app@example.com",
        to=["u@example.org"],
        subject=f"m{n}",
        text="the secret quarterly figures",
    )


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``resolve(port)``: TLS_NAME resolves to 127.0.0.1 (asyncio looks it up per call)."""
    real = socket.getaddrinfo

    def install(port: int) -> None:
        def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
            return real("127.0.0.1" if host == TLS_NAME else host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake)

    return install


@pytest.fixture
def mitm(starttls_server: SMTPTestServer) -> Iterator[StripTLSProxy]:
    proxy = StripTLSProxy(starttls_server.port)
    proxy.start()
    yield proxy
    proxy.stop()


def named_config(server: SMTPTestServer, port: int, **overrides: Any) -> dict[str, Any]:
    return server.named_config(port=port, **overrides)


# ------------------------------------------------------------------------ the default


@pytest.mark.parametrize(
    ("host", "required"),
    [
        ("smtp.example.com", True),
        ("192.0.2.10", True),
        ("2001:db8::1", True),
        ("localhost", False),
        ("LOCALHOST.", False),
        ("relay.localhost", False),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("::1", False),
        ("[::1]", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_require_tls_defaults_to_true_except_on_loopback(host: str, required: bool) -> None:
    assert is_loopback(host) is not required
    assert SMTPConfig(host=host).require_tls is required


def test_explicit_choices_win_over_the_default() -> None:
    assert SMTPConfig(host="smtp.example.com", require_tls=False).require_tls is False
    assert SMTPConfig(host="smtp.example.com", ignore_tls=True).require_tls is False
    assert SMTPConfig(host="127.0.0.1", require_tls=True).require_tls is True
    with pytest.raises(ValueError, match="contradict"):
        SMTPConfig(host="smtp.example.com", require_tls=True, ignore_tls=True)


# ------------------------------------------------------------------- the MITM proxy


async def test_stripped_starttls_is_refused_by_default(
    starttls_server: SMTPTestServer, mitm: StripTLSProxy, resolve: Callable[[int], None]
) -> None:
    resolve(mitm.port)
    async with SMTPProvider.from_config("p", named_config(starttls_server, mitm.port)) as p:
        with pytest.raises(TransientError) as info:
            await p.send(message())
    text = str(info.value)
    assert "does not offer STARTTLS and require_tls is on" in text
    assert "require_tls: false" in text
    assert starttls_server.state.messages == []
    assert "MAIL" not in starttls_server.state.verbs()
    assert b"quarterly" not in bytes(mitm.seen_by_mitm)


async def test_without_the_mitm_the_same_config_sends_over_tls(
    starttls_server: SMTPTestServer, resolve: Callable[[int], None]
) -> None:
    resolve(starttls_server.port)
    config = named_config(starttls_server, starttls_server.port)
    async with SMTPProvider.from_config("p", config) as p:
        await p.send(message())
    assert "STARTTLS" in starttls_server.state.verbs()
    assert len(starttls_server.state.messages) == 1


@pytest.mark.parametrize("optout", [{"require_tls": False}, {"ignore_tls": True}])
async def test_explicit_plaintext_sends_and_logs_once_per_connection(
    starttls_server: SMTPTestServer,
    mitm: StripTLSProxy,
    resolve: Callable[[int], None],
    caplog: pytest.LogCaptureFixture,
    optout: dict[str, bool],
) -> None:
    resolve(mitm.port)
    config = named_config(starttls_server, mitm.port, pool=True, max_connections=1, **optout)
    caplog.set_level(logging.DEBUG, logger="mailer")
    async with SMTPProvider.from_config("p", config) as p:
        for n in range(3):
            await p.send(message(n))
    assert len(starttls_server.state.messages) == 3
    assert b"quarterly" in bytes(mitm.seen_by_mitm)  # it did go out in clear
    warnings = [r for r in caplog.records if "go out in plaintext" in r.getMessage()]
    assert len(warnings) == 1  # one pooled connection, one line
    assert warnings[0].levelno == logging.WARNING
    assert next(iter(optout)) in warnings[0].getMessage()


async def test_loopback_plaintext_is_not_a_warning(
    plain_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    async with SMTPProvider.from_config("p", plain_server.config()) as p:
        await p.send(message())
    lines = [r for r in caplog.records if "go out in plaintext" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG]


# ----------------------------------------------------------------------------- OAuth


def oauth(token_url: str) -> dict[str, Any]:
    return {
        "host": "smtp.example.com",
        "auth": {
            "user": "u",
            "oauth2": {
                "token_url": token_url,
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
            },
        },
    }


@pytest.mark.parametrize(
    "url", ["http://oauth.example/token", "http://192.0.2.1/token", "ftp://oauth.example/t"]
)
def test_token_endpoint_must_be_https(url: str) -> None:
    with pytest.raises(ConfigError, match="token_url must be"):
        SMTPProvider.from_config("p", oauth(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://oauth.example/token",
        "http://127.0.0.1:8080/token",
        "http://localhost/t",
        "http://[::1]:9000/token",
    ],
)
def test_https_or_loopback_token_endpoints_are_accepted(url: str) -> None:
    SMTPProvider.from_config("p", oauth(url))
