"""TLS modes, certificates, SNI and the never-AUTH-in-plaintext rule, on real servers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from tests.smtp.network import running

from mailer import Message
from mailer._errors import AuthError, TransientError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import TLS_NAME, USERS, SilentServer, SMTPTestServer

pytestmark = pytest.mark.anyio

AUTH = {"user": "alice", "password": USERS["alice"]}


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject="Hi", text="hello")


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_tls_verified_with_custom_ca_and_sni_for_ip_host(
    smtp_server: Callable[..., SMTPTestServer], mode: str
) -> None:
    server = smtp_server(tls=mode)
    async with SMTPProvider.from_config("p", server.config(auth=AUTH)) as provider:
        result = await provider.send(message())
    assert result.accepted == ["u@example.org"]
    # host is 127.0.0.1; the server was asked for the configured name, in both modes
    assert server.state.sni == [TLS_NAME]
    assert "AUTH PLAIN" in server.state.commands
    if mode == "starttls":
        assert server.state.verbs().index("STARTTLS") < server.state.verbs().index("AUTH")
    assert len(server.state.messages) == 1


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_unknown_ca_refused(smtp_server: Callable[..., SMTPTestServer], mode: str) -> None:
    server = smtp_server(tls=mode)
    config = server.config(
        auth=AUTH,
        tls={
            "ca_file": str(server.certs.other_ca_file),  # type: ignore[union-attr]
            "servername": TLS_NAME,
        },
    )
    provider = SMTPProvider.from_config("p", config)
    with pytest.raises(TransientError) as info:
        await provider.send(message())
    assert str(info.value).startswith(f"[p] TLS certificate verification failed for {TLS_NAME!r}")
    assert "tls.ca_file" in str(info.value)
    assert "AUTH" not in server.state.verbs()  # never fell back to plaintext
    assert server.state.messages == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_ip_host_without_servername_fails_on_the_certificate_name(
    smtp_server: Callable[..., SMTPTestServer], mode: str
) -> None:
    server = smtp_server(tls=mode)
    config = server.config(tls={"ca_file": str(server.certs.ca_file)})  # type: ignore[union-attr]
    with pytest.raises(
        TransientError, match=r"TLS certificate verification failed for .127\.0\.0\.1."
    ) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert "tls.servername" in str(info.value)


async def test_verify_false_skips_the_certificate_check(
    starttls_server: SMTPTestServer,
) -> None:
    config = starttls_server.config(tls={"verify": False})
    result = await SMTPProvider.from_config("p", config).send(message())
    assert result.accepted == ["u@example.org"]


async def test_auth_never_sent_in_plaintext(plain_server: SMTPTestServer) -> None:
    provider = SMTPProvider.from_config("p", plain_server.config(auth=AUTH))
    with pytest.raises(AuthError) as info:
        await provider.send(message())
    assert "refusing to send AUTH over a plaintext connection" in str(info.value)
    assert "allow_plaintext_auth=True" in str(info.value)
    assert plain_server.state.verbs() == ["EHLO"]  # no AUTH, no MAIL
    with pytest.raises(AuthError, match="plaintext"):
        await provider.verify()


async def test_plaintext_auth_when_explicitly_allowed(plain_server: SMTPTestServer) -> None:
    config = plain_server.config(auth=AUTH, allow_plaintext_auth=True)
    result = await SMTPProvider.from_config("p", config).send(message())
    assert result.accepted == ["u@example.org"]
    assert "AUTH PLAIN" in plain_server.state.commands


async def test_no_auth_plaintext_is_opportunistic(plain_server: SMTPTestServer) -> None:
    result = await SMTPProvider.from_config("p", plain_server.config()).send(message())
    assert result.accepted == ["u@example.org"]


async def test_require_tls_without_starttls(plain_server: SMTPTestServer) -> None:
    with pytest.raises(TransientError, match=r"does not offer STARTTLS and require_tls is on"):
        await SMTPProvider.from_config("p", plain_server.config(require_tls=True)).send(message())
    assert "MAIL" not in plain_server.state.verbs()


async def test_ignore_tls_skips_starttls(starttls_server: SMTPTestServer) -> None:
    config = starttls_server.config(ignore_tls=True, tls={})
    await SMTPProvider.from_config("p", config).send(message())
    assert "STARTTLS" not in starttls_server.state.verbs()


async def test_implicit_tls_on_a_plaintext_port(plain_server: SMTPTestServer) -> None:
    config = plain_server.config(secure=True, tls={"servername": TLS_NAME})
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert "the server answered in plaintext" in str(info.value)
    assert "set secure=False" in str(info.value)


async def test_plaintext_on_an_implicit_tls_port_stalls_at_the_greeting(
    tls_server: SMTPTestServer,
) -> None:
    config = tls_server.config(secure=False, greeting_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert time.monotonic() - started < 2
    assert "waiting for the greeting" in str(info.value)
    assert "set secure=True" in str(info.value)


async def test_greeting_timeout_honoured() -> None:
    silent = SilentServer()
    with running(silent):
        config = {"host": "127.0.0.1", "port": silent.port, "greeting_timeout": 0.4}
        provider = SMTPProvider.from_config("p", config)
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            await provider.send(message())
        elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 1.5
    assert f"timed out after 0.4s waiting for the greeting from 127.0.0.1:{silent.port}" in str(
        info.value
    )
    assert "(greeting_timeout)" in str(info.value)


async def test_verify_runs_the_whole_handshake(starttls_server: SMTPTestServer) -> None:
    await SMTPProvider.from_config("p", starttls_server.config(auth=AUTH)).verify()
    assert starttls_server.state.verbs() == ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]
    assert starttls_server.state.messages == []


async def test_verify_reports_bad_credentials(starttls_server: SMTPTestServer) -> None:
    config = starttls_server.config(auth={"user": "alice", "password": "wrong-pw"})
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", config).verify()
    assert info.value.code == 535
    assert str(info.value).startswith("[p] authentication failed: 535")
    assert "wrong-pw" not in str(info.value) and "wrong-pw" not in repr(info.value)
