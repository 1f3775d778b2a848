"""The shared HTTP boundary: status and transport mapping, Retry-After, secrets, the client.

Most checks stub the API with respx; the transport faults that matter most (a server that
takes the request and never answers, one that hangs up, a refused port) are injected by a
real server on 127.0.0.1, so httpx's own exceptions are what the boundary sees.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from mailer import (
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    Message,
    MessageError,
    PermanentError,
    RateLimited,
    SendResult,
    TransientError,
)
from mailer._attempt import AttemptContext
from mailer.providers.http import (
    MAX_BODY,
    Answer,
    HTTPConfig,
    HTTPProvider,
    HTTPRequest,
    parse_retry_after,
    unique_recipients,
)
from mailer.testing import serve

pytestmark = pytest.mark.anyio

SECRET = "tok-very-secret-value"
URL = "https://api.example.test/send"


class EchoConfig(HTTPConfig):
    token: SecretStr


class EchoProvider(HTTPProvider[EchoConfig]):
    """The smallest adapter: posts the subject, reads an id."""

    Config: ClassVar[type[EchoConfig]] = EchoConfig
    default_base_url = "https://api.example.test"
    verify_path = "/me"
    rate_limit_reset_headers = ("X-Reset",)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.config.token.get_secret_value()}"}

    def build_request(self, message: Message) -> HTTPRequest:
        if message.tags:
            self.unsupported("tags")
        return HTTPRequest("POST", "/send", json={"subject": message.subject})

    def parse_success(self, message: Message, answer: Answer) -> SendResult:
        return self.result(message, answer, provider_message_id=answer.get("id"))


def make(**config: Any) -> EchoProvider:
    return EchoProvider.from_config("echo", {"token": SECRET, **config})


MESSAGE = Message(sender="a@example.com", to=["b@example.org"], subject="hi", text="t")


# ---------------------------------------------------------------- status mapping


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, PermanentError),
        (404, PermanentError),
        (413, PermanentError),
        (422, PermanentError),
        (401, AuthError),
        (403, AuthError),
        (408, TransientError),
        (429, RateLimited),
        (502, TransientError),
        (503, TransientError),
        (500, DeliveryUncertain),
        (504, DeliveryUncertain),
        (507, DeliveryUncertain),
        (302, TransientError),
    ],
)
async def test_status_mapping(stubbed: Any, status: int, expected: type[DeliveryError]) -> None:
    answer = httpx.Response(status, json={"message": f"reason {status}"})
    sent = await stubbed(make(), MESSAGE, "POST", URL, answer)
    assert type(sent.error) is expected
    assert sent.error.code == status
    assert sent.error.provider == "echo"
    assert f"reason {status}" in str(sent.error)
    assert sent.error.response is not None and f"reason {status}" in sent.error.response
    assert sent.calls == 1


async def test_success_result(stubbed: Any) -> None:
    sent = await stubbed(make(), MESSAGE, "POST", URL, httpx.Response(200, json={"id": "x1"}))
    assert sent.error is None
    assert sent.result.provider == "echo"
    assert sent.result.provider_message_id == "x1"
    assert sent.result.message_id == MESSAGE.message_id
    assert sent.result.accepted == ["b@example.org"]
    assert sent.request.headers["Authorization"] == f"Token {SECRET}"
    assert sent.request.headers["User-Agent"].startswith("mailer-failover")


async def test_error_text_from_errors_list_and_plain_body(stubbed: Any) -> None:
    answer = httpx.Response(400, json={"errors": [{"message": "bad from"}, {"message": "bad to"}]})
    sent = await stubbed(make(), MESSAGE, "POST", URL, answer)
    assert "bad from; bad to" in str(sent.error)
    sent = await stubbed(make(), MESSAGE, "POST", URL, httpx.Response(400, text="nope"))
    assert "nope" in str(sent.error)


async def test_long_error_body_is_truncated(stubbed: Any) -> None:
    sent = await stubbed(make(), MESSAGE, "POST", URL, httpx.Response(400, text="x" * 50_000))
    assert len(sent.error.response) == MAX_BODY


# ---------------------------------------------------------------- Retry-After


async def test_retry_after_seconds(stubbed: Any) -> None:
    answer = httpx.Response(429, headers={"Retry-After": "30"})
    sent = await stubbed(make(), MESSAGE, "POST", URL, answer)
    assert isinstance(sent.error, RateLimited)
    assert sent.error.retry_after == 30
    assert sent.error.failover


async def test_retry_after_http_date(stubbed: Any) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    sent = await stubbed(
        make(), MESSAGE, "POST", URL, httpx.Response(429, headers={"Retry-After": when})
    )
    assert 85 <= sent.error.retry_after <= 91


async def test_reset_header_delta_and_epoch(stubbed: Any) -> None:
    sent = await stubbed(
        make(), MESSAGE, "POST", URL, httpx.Response(429, headers={"X-Reset": "12"})
    )
    assert sent.error.retry_after == 12
    epoch = str(int(time.time()) + 60)
    sent = await stubbed(
        make(), MESSAGE, "POST", URL, httpx.Response(429, headers={"X-Reset": epoch})
    )
    assert 55 <= sent.error.retry_after <= 61


async def test_429_without_hint_has_no_retry_after(stubbed: Any) -> None:
    sent = await stubbed(make(), MESSAGE, "POST", URL, httpx.Response(429))
    assert isinstance(sent.error, RateLimited)
    assert sent.error.retry_after is None


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("-5", now=now) == 0
    assert parse_retry_after(str(now + 42), now=now) == 42
    assert parse_retry_after(str(now - 42), now=now) == 0  # a reset already past
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now=now) == 60  # now is 22:13:20
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("nan", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None) is None


# ---------------------------------------------------------------- transport errors


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), TransientError),
        (httpx.ConnectTimeout("slow connect"), TransientError),
        (httpx.PoolTimeout("pool exhausted"), TransientError),
        (httpx.ProxyError("proxy down"), TransientError),
        (httpx.ReadTimeout("slow reply"), DeliveryUncertain),
        (httpx.WriteTimeout("slow upload"), DeliveryUncertain),
        (httpx.ReadError("reset"), DeliveryUncertain),
        (httpx.WriteError("broken pipe"), DeliveryUncertain),
        (httpx.RemoteProtocolError("server disconnected"), DeliveryUncertain),
    ],
)
async def test_transport_error_mapping(
    stubbed: Any, exc: Exception, expected: type[DeliveryError]
) -> None:
    sent = await stubbed(make(), MESSAGE, "POST", URL, exc)
    assert type(sent.error) is expected
    assert sent.error.provider == "echo"
    assert isinstance(sent.error.__cause__, httpx.HTTPError)


async def test_real_read_timeout_is_uncertain() -> None:
    async with serve("hang") as server:
        provider = make(base_url=f"http://127.0.0.1:{server.port}", timeout=0.3)
        start = time.monotonic()
        with pytest.raises(DeliveryUncertain) as info:
            await provider.send(MESSAGE)
        await provider.aclose()
    assert time.monotonic() - start < 5
    assert server.requests == 1
    assert "may have been accepted" in str(info.value)


async def test_real_dropped_response_is_uncertain() -> None:
    async with serve("drop") as server:
        provider = make(base_url=f"http://127.0.0.1:{server.port}")
        with pytest.raises(DeliveryUncertain):
            await provider.send(MESSAGE)
        await provider.aclose()
    assert server.requests == 1


async def test_real_connection_refused_is_transient() -> None:
    async with serve("ok") as server:
        port = server.port
    provider = make(base_url=f"http://127.0.0.1:{port}")  # the server is gone
    with pytest.raises(TransientError) as info:
        await provider.send(MESSAGE)
    await provider.aclose()
    assert type(info.value) is TransientError
    assert "nothing was sent" in str(info.value)


async def test_keep_alive_reuses_one_connection() -> None:
    async with serve("ok") as server:
        provider = make(base_url=f"http://127.0.0.1:{server.port}")
        first = await provider.send(MESSAGE)
        client = provider.client()
        second = await provider.send(MESSAGE)
        assert provider.client() is client
        await provider.aclose()
    assert first.provider_message_id == second.provider_message_id == "real-1"
    assert server.requests == 2
    assert server.connections == 1


async def test_send_deadline_shortens_the_timeout() -> None:
    async with serve("hang") as server:
        provider = make(base_url=f"http://127.0.0.1:{server.port}", timeout=30)
        token = AttemptContext("p", deadline=time.monotonic() + 0.3).enter()
        start = time.monotonic()
        try:
            with pytest.raises(DeliveryUncertain):
                await provider.send(MESSAGE)
        finally:
            AttemptContext.exit(token)
            await provider.aclose()
    assert time.monotonic() - start < 5


async def test_aclose_then_send_opens_a_new_client(stubbed: Any) -> None:
    provider = make()
    client = provider.client()
    await provider.aclose()
    assert client.is_closed
    sent = await stubbed(provider, MESSAGE, "POST", URL, httpx.Response(200, json={"id": "1"}))
    assert sent.result is not None


# ---------------------------------------------------------------- secrets


async def test_secret_echoed_by_the_api_is_scrubbed(stubbed: Any) -> None:
    answer = httpx.Response(401, json={"message": f"invalid token {SECRET}"})
    sent = await stubbed(make(), MESSAGE, "POST", URL, answer)
    assert isinstance(sent.error, AuthError)
    for text in (str(sent.error), repr(sent.error), sent.error.response, *sent.error.args):
        assert SECRET not in text
    assert "***" in str(sent.error)


def test_repr_and_config_hide_secret() -> None:
    provider = make()
    for text in (repr(provider), str(provider), repr(provider.config), str(provider.config)):
        assert SECRET not in text


# ---------------------------------------------------------------- config and features


@pytest.mark.parametrize(
    "options",
    [
        {"bogus": 1},
        {"base_url": "ftp://api.example.test"},
        {"base_url": "https://user:pw@api.example.test"},
        {"base_url": "https://api.example.test/?q=1"},
        {"timeout": 0},
        {"timeout": "slow"},
        {"ca_file": "/nonexistent/ca.pem"},
    ],
)
def test_bad_config_is_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        make(**options)
    assert SECRET not in str(info.value)


def test_base_url_override_and_trailing_slash() -> None:
    assert make(base_url="http://127.0.0.1:8025/").base_url == "http://127.0.0.1:8025"
    assert make().base_url == "https://api.example.test"


async def test_unsupported_feature_fails_before_io_naming_provider_and_feature() -> None:
    import respx

    tagged = Message(sender="a@example.com", to=["b@example.org"], subject="s", tags=["t"])
    with respx.mock(assert_all_called=False) as router:
        route = router.post(URL).mock(return_value=httpx.Response(200, json={}))
        with pytest.raises(MessageError) as info:
            await make().send(tagged)
    assert route.call_count == 0
    assert "'echo'" in str(info.value)
    assert "tags" in str(info.value)
    assert "ignore_unsupported" in str(info.value)


async def test_ignore_unsupported_sends_without_it(stubbed: Any, caplog: Any) -> None:
    tagged = Message(sender="a@example.com", to=["b@example.org"], subject="s", tags=["t"])
    sent = await stubbed(
        make(ignore_unsupported=True), tagged, "POST", URL, httpx.Response(200, json={"id": "1"})
    )
    assert sent.result is not None
    assert "sending without tags" in caplog.text


async def test_verify_success_and_auth_failure(stubbed: Any) -> None:
    import respx

    provider = make()
    with respx.mock(assert_all_mocked=True) as router:
        router.get("https://api.example.test/me").mock(return_value=httpx.Response(200))
        await provider.verify()
        router.get("https://api.example.test/me").mock(return_value=httpx.Response(403))
        with pytest.raises(AuthError):
            await provider.verify()
    await provider.aclose()


def test_unique_recipients_keeps_first_occurrence() -> None:
    message = Message(
        sender="a@example.com",
        to=["x@example.org", "X@example.org"],
        cc=["y@example.org", "x@example.org"],
        bcc=["y@example.org", "z@example.org"],
    )
    to, cc, bcc = unique_recipients(message)
    assert [a.email for a in to] == ["x@example.org"]
    assert [a.email for a in cc] == ["y@example.org"]
    assert [a.email for a in bcc] == ["z@example.org"]
