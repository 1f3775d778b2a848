"""PLAIN, LOGIN and XOAUTH2 against a real server, with a real HTTP token endpoint."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailer import Message
from mailer._errors import AuthError, TransientError
from mailer.providers._smtp import OAuth2Options, SMTPProvider
from mailer.testing import USERS, SMTPTestServer, TokenEndpoint, closed_port

pytestmark = pytest.mark.anyio


def message(n: int = 0) -> Message:
    return Message(sender="app@example.com", to=[f"u{n}@example.org"], subject="Hi", text="x")


def oauth(endpoint: TokenEndpoint | None = None, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = dict(extra)
    if endpoint is not None:
        settings.update(
            token_url=endpoint.url,
            client_id="cid",
            client_secret="cs-SECRET",
            refresh_token="rt-SECRET",
        )
    return {"user": "alice", "oauth2": settings}


async def test_login_mechanism(starttls_server: SMTPTestServer) -> None:
    auth = {"user": "alice", "password": USERS["alice"], "method": "LOGIN"}
    await SMTPProvider.from_config("p", starttls_server.config(auth=auth)).send(message())
    assert "AUTH LOGIN" in starttls_server.state.commands


async def test_wrong_password_is_one_attempt_only(starttls_server: SMTPTestServer) -> None:
    auth = {"user": "alice", "password": "nope"}
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", starttls_server.config(auth=auth)).send(message())
    assert (info.value.code, info.value.provider) == (535, "p")
    # one AUTH, not one per advertised mechanism (that is how accounts get locked)
    assert starttls_server.state.verbs().count("AUTH") == 1


async def test_xoauth2_static_token(starttls_server: SMTPTestServer) -> None:
    starttls_server.state.valid_tokens.add("static-token")
    config = starttls_server.config(auth=oauth(access_token="static-token"))
    await SMTPProvider.from_config("p", config).send(message())
    assert starttls_server.state.auth_tokens == ["static-token"]
    assert "AUTH XOAUTH2" in starttls_server.state.commands


async def test_refused_static_token_is_an_auth_error(starttls_server: SMTPTestServer) -> None:
    config = starttls_server.config(auth=oauth(access_token="expired-SECRET"))
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    assert info.value.code == 535  # after the 334 error challenge
    assert "the access token was refused and no refresh is configured" in str(info.value)
    assert "SECRET" not in str(info.value)
    assert starttls_server.state.auth_tokens == ["expired-SECRET"]


async def test_one_refresh_for_40_sends_over_a_pool_of_4(
    starttls_server: SMTPTestServer, token_endpoint: TokenEndpoint
) -> None:
    starttls_server.state.valid_tokens.add("fresh-token")
    token_endpoint.delay = 0.2  # keep the refresh in flight while the others get refused
    config = starttls_server.config(
        auth=oauth(token_endpoint, access_token="stale-token"), pool=True, max_connections=4
    )
    async with SMTPProvider.from_config("p", config) as provider:
        results = await asyncio.wait_for(
            asyncio.gather(*(provider.send(message(i)) for i in range(40))), 20
        )
        assert provider.tokens is not None and provider.tokens.refreshes == 1
    assert len(results) == 40 and len(starttls_server.state.messages) == 40
    assert len(token_endpoint.requests) == 1
    assert token_endpoint.requests[0]["grant_type"] == "refresh_token"
    assert token_endpoint.requests[0]["refresh_token"] == "rt-SECRET"
    tokens = starttls_server.state.auth_tokens
    assert tokens.count("fresh-token") == 4  # one successful AUTH per connection
    assert set(tokens) == {"stale-token", "fresh-token"}
    assert starttls_server.state.peak <= 4


async def test_token_endpoint_error_is_an_auth_error_without_secrets(
    starttls_server: SMTPTestServer, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.error = "invalid_grant"
    config = starttls_server.config(auth=oauth(token_endpoint))
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", config).send(message())
    text = str(info.value)
    assert f"OAuth2 token endpoint {token_endpoint.url} refused the refresh: invalid_grant" in text
    assert (info.value.code, info.value.response) == (400, "invalid_grant")
    assert "SECRET" not in text + repr(info.value)
    assert "AUTH" not in starttls_server.state.verbs()  # nothing was tried with no token


async def test_token_endpoint_server_error_is_transient(
    starttls_server: SMTPTestServer, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.error, token_endpoint.status = "temporarily_unavailable", 503
    with pytest.raises(TransientError, match="failed with HTTP 503"):
        await SMTPProvider.from_config(
            "p", starttls_server.config(auth=oauth(token_endpoint))
        ).send(message())


async def test_token_endpoint_unreachable_is_transient(starttls_server: SMTPTestServer) -> None:
    settings = oauth(
        token_url=f"http://127.0.0.1:{closed_port()}/token",
        client_id="c",
        client_secret="s",
        refresh_token="r",
    )
    with pytest.raises(TransientError, match="unreachable"):
        await SMTPProvider.from_config("p", starttls_server.config(auth=settings)).send(message())


async def test_refresh_ahead_of_expiry(
    starttls_server: SMTPTestServer, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.tokens = ["t1", "t2"]
    token_endpoint.expires_in = 61  # inside the 60 s margin after one second
    starttls_server.state.valid_tokens.update({"t1", "t2"})
    provider = SMTPProvider.from_config("p", starttls_server.config(auth=oauth(token_endpoint)))
    await provider.send(message())
    await provider.send(message())  # still fresh: no new request
    assert len(token_endpoint.requests) == 1
    await asyncio.sleep(1.1)
    await provider.send(message())
    assert len(token_endpoint.requests) == 2
    # the server never had to refuse a token: refreshed before, not after, expiry
    assert starttls_server.state.auth_tokens == ["t1", "t1", "t2"]
    await provider.aclose()


async def test_callback_source_refreshes_on_refusal(starttls_server: SMTPTestServer) -> None:
    calls: list[float] = []
    starttls_server.state.valid_tokens.add("cb-2")

    async def callback() -> tuple[str, float]:
        calls.append(time.monotonic())
        return f"cb-{len(calls)}", 3600.0

    config = starttls_server.config(auth=oauth(callback=callback))
    await SMTPProvider.from_config("p", config).send(message())
    assert len(calls) == 2
    assert starttls_server.state.auth_tokens == ["cb-1", "cb-2"]


async def test_failing_callback(starttls_server: SMTPTestServer) -> None:
    async def callback() -> str:
        raise RuntimeError("vault down")

    config = starttls_server.config(auth=oauth(callback=callback))
    with pytest.raises(AuthError, match="the OAuth2 token callback failed: RuntimeError"):
        await SMTPProvider.from_config("p", config).send(message())


def test_presets() -> None:
    google = OAuth2Options(preset="google", client_id="c", client_secret="s", refresh_token="r")  # type: ignore[arg-type]
    assert google.endpoint == "https://oauth2.googleapis.com/token"
    microsoft = OAuth2Options(
        preset="microsoft",
        tenant="contoso",
        client_id="c",
        client_secret="s",
        refresh_token="r",  # type: ignore[arg-type]
    )
    assert microsoft.endpoint == "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
    assert microsoft.effective_scope == "https://outlook.office.com/SMTP.Send offline_access"


async def test_secrets_stay_out_of_logs(
    starttls_server: SMTPTestServer, token_endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    starttls_server.state.valid_tokens.add("fresh-token")
    config = starttls_server.config(auth=oauth(token_endpoint, access_token="stale-SECRET"))
    provider = SMTPProvider.from_config("p", config)
    await provider.send(message())
    bad = starttls_server.config(auth={"user": "alice", "password": "pw-SECRET"})
    with pytest.raises(AuthError) as info:
        await SMTPProvider.from_config("p", bad).send(message())
    client_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    assert not any("SECRET" in line or "fresh-token" in line for line in client_logs)
    assert "SECRET" not in repr(provider.tokens) + str(info.value) + repr(info.value)
    await provider.aclose()
