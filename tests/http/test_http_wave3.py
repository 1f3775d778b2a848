"""What is particular to Postal, Scaleway, Unisender Go and Azure: their config and DSNs,
refusals before any I/O, per-recipient answers, verify, and Azure's signed requests."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from mailer import (
    Attachment,
    AuthError,
    ConfigError,
    DeliveryUncertain,
    Message,
    RecipientsDeferred,
    RecipientsRefused,
    UnsupportedFeature,
)
from mailer._config import parse_dsn
from mailer.providers._azure import AzureProvider, content_sha256, operation_id, signature
from mailer.providers._postal import PostalProvider
from mailer.providers._scaleway import ScalewayProvider
from mailer.providers._unisender_go import UnisenderGoProvider
from mailer.testing import HTTPRequest, Reply, serve


def provider_from_url(name: str, url: str) -> Any:
    """The provider a DSN makes (as a config file's ``dsn = ...`` entry does)."""
    from mailer._plugins import load_provider_class

    entry = parse_dsn(url)
    return load_provider_class(entry["type"]).from_config(name, entry["config"])


pytestmark = pytest.mark.anyio

PROJECT = "6a7a4d0e-3c6a-4d39-8d57-2f0c4a7b9e11"
KEY = base64.b64encode(b"azure-unit-test-secret-key-32byt").decode()
ONE = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")


# -- Postal -------------------------------------------------------------------------------


def test_postal_needs_its_host() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        PostalProvider.from_config("p", {"server_key": "k"})


def test_postal_dsn_names_the_host() -> None:
    provider = provider_from_url("p", "postal://KEY123@postal.example.com")
    assert isinstance(provider, PostalProvider)
    assert provider.base_url == "https://postal.example.com"
    assert provider.config.server_key.get_secret_value() == "KEY123"


async def test_postal_refuses_more_than_50_to_before_io() -> None:
    provider = PostalProvider.from_config(
        "p", {"server_key": "k", "base_url": "https://postal.example.com"}
    )
    many = Message(
        sender="s@example.com", to=[f"r{i}@example.org" for i in range(51)], subject="x", text="t"
    )
    with pytest.raises(UnsupportedFeature, match="at most 50 to"):
        provider.build_request(many)


async def test_postal_error_in_a_200_answer_and_verify() -> None:
    """Postal answers 200 with status "error"; verify proves the key with a look-up."""

    def respond(request: HTTPRequest) -> Reply:
        if request.headers.get("x-server-api-key") != "good":
            return Reply(
                200,
                {
                    "status": "error",
                    "time": 0,
                    "flags": {},
                    "data": {"code": "InvalidServerAPIKey", "message": "not valid", "token": "bad"},
                },
            )
        return Reply(
            200,
            {
                "status": "error",
                "time": 0,
                "flags": {},
                "data": {"code": "MessageNotFound", "id": 0},
            },
        )

    async with serve(respond=respond) as server:
        good = PostalProvider.from_config("p", {"server_key": "good", "base_url": server.base_url})
        bad = PostalProvider.from_config("p", {"server_key": "bad", "base_url": server.base_url})
        try:
            await good.verify()
            with pytest.raises(AuthError, match="InvalidServerAPIKey"):
                await bad.verify()
            with pytest.raises(AuthError, match="InvalidServerAPIKey") as info:
                await bad.send(ONE)
        finally:
            await good.aclose()
            await bad.aclose()
    assert server.log[0].path == "/api/v1/messages/message"
    assert server.log[0].json() == {"id": 0}
    assert info.value.code == 200


# -- Scaleway -----------------------------------------------------------------------------


def test_scaleway_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="project_id"):
        ScalewayProvider.from_config("s", {"secret_key": "k", "project_id": "nope"})
    with pytest.raises(ConfigError, match="region"):
        ScalewayProvider.from_config(
            "s", {"secret_key": "k", "project_id": PROJECT, "region": "Paris"}
        )


def test_scaleway_dsn_and_region() -> None:
    provider = provider_from_url(
        "s", f"scaleway://SECRET@default?project_id={PROJECT}&region=nl-ams"
    )
    assert isinstance(provider, ScalewayProvider)
    assert provider.send_target() == "/transactional-email/v1alpha1/regions/nl-ams/emails"
    assert provider.verify_target() == (
        f"/transactional-email/v1alpha1/regions/nl-ams/domains?project_id={PROJECT}&page_size=1"
    )


def test_scaleway_refuses_non_ascii_local_parts_and_big_messages() -> None:
    provider = ScalewayProvider.from_config("s", {"secret_key": "k", "project_id": PROJECT})
    eai = Message(sender="s@example.com", to=["jürgen@example.org"], subject="x", text="t")
    eai.render()
    with pytest.raises(UnsupportedFeature, match="SMTPUTF8"):
        provider.build_request(eai)
    big = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t" * 2_100_000)
    big.render()
    with pytest.raises(UnsupportedFeature, match=r"2\.0 MB"):
        provider.build_request(big)


def test_scaleway_reply_to_and_headers_go_as_additional_headers() -> None:
    provider = ScalewayProvider.from_config("s", {"secret_key": "k", "project_id": PROJECT})
    message = Message(
        sender="s@example.com",
        to=["a@example.org"],
        subject="x",
        text="t",
        reply_to=["Jörg <j@example.com>", "b@example.com"],
        headers={"X-A": "1"},
    )
    message.render()
    body = provider.build_request(message).json
    assert body["additional_headers"] == [
        {"key": "Reply-To", "value": "=?utf-8?b?SsO2cmc=?= <j@example.com>, b@example.com"},
        {"key": "X-A", "value": "1"},
    ]
    assert body["project_id"] == PROJECT


# -- Unisender Go -------------------------------------------------------------------------


def test_unisender_go_data_centres() -> None:
    go2 = UnisenderGoProvider.from_config("u", {"api_key": "k", "data_centre": "go2"})
    assert go2.base_url == "https://go2.unisender.ru/ru/transactional/api/v1"
    with pytest.raises(ConfigError, match="data_centre"):
        UnisenderGoProvider.from_config("u", {"api_key": "k", "data_centre": "go3"})


def _ug(**answer: Any) -> Any:
    return lambda request: Reply(200, {"status": "success", "job_id": "J1", **answer})


async def _ug_send(answer: Any, message: Message) -> Any:
    async with serve(respond=answer) as server:
        provider = UnisenderGoProvider.from_config(
            "u", {"api_key": "k", "base_url": server.base_url}
        )
        try:
            return await provider.send(message)
        finally:
            await provider.aclose()


TWO = Message(sender="s@example.com", to=["a@example.org", "B@example.org"], subject="x", text="t")


async def test_unisender_go_some_recipients_refused() -> None:
    result = await _ug_send(
        _ug(emails=["a@example.org"], failed_emails={"b@example.org": "unsubscribed"}), TWO
    )
    assert result.provider_message_id == "J1"
    assert result.accepted == ["a@example.org"]
    assert result.rejected == {"B@example.org": "unsubscribed"}


async def test_unisender_go_every_recipient_refused() -> None:
    with pytest.raises(RecipientsRefused) as info:
        await _ug_send(
            _ug(
                emails=[],
                failed_emails={"a@example.org": "invalid", "b@example.org": "unsubscribed"},
            ),
            TWO,
        )
    assert type(info.value) is RecipientsRefused
    assert not info.value.failover
    with pytest.raises(RecipientsDeferred) as later:
        await _ug_send(
            _ug(
                emails=[],
                failed_emails={
                    "a@example.org": "temporary_unavailable",
                    "b@example.org": "invalid",
                },
            ),
            TWO,
        )
    assert later.value.failover


async def test_unisender_go_duplicate_is_not_a_refusal() -> None:
    result = await _ug_send(
        _ug(
            emails=["a@example.org", "b@example.org"], failed_emails={"a@example.org": "duplicate"}
        ),
        TWO,
    )
    assert result.rejected == {}


async def test_unisender_go_verify_calls_system_info() -> None:
    async with serve(respond=lambda r: Reply(200, {"status": "success", "user_id": 1})) as server:
        provider = UnisenderGoProvider.from_config(
            "u", {"api_key": "k", "base_url": server.base_url}
        )
        try:
            await provider.verify()
        finally:
            await provider.aclose()
    assert (server.log[0].method, server.log[0].path) == ("POST", "/system/info.json")
    assert server.log[0].headers["x-api-key"] == "k"


# -- Azure --------------------------------------------------------------------------------


def test_azure_connection_string_and_dsn() -> None:
    provider = AzureProvider.from_config(
        "a", {"connection_string": f"endpoint=https://res.communication.azure.com/;accesskey={KEY}"}
    )
    assert provider.base_url == "https://res.communication.azure.com"
    assert KEY not in repr(provider) and KEY not in repr(provider.config)
    from urllib.parse import quote

    dsn = provider_from_url("a", f"azure://{quote(KEY, safe='')}@res.communication.azure.com")
    assert isinstance(dsn, AzureProvider)
    assert dsn.config.access_key is not None
    assert dsn.config.access_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    "config",
    [
        {"endpoint": "https://res.communication.azure.com"},
        {"endpoint": "https://res.communication.azure.com", "access_key": "not base64!"},
        {"connection_string": "endpoint=https://x;nokey=1"},
        {"connection_string": f"endpoint=https://x;accesskey={KEY}", "access_key": KEY},
    ],
)
def test_azure_bad_config_is_refused_without_the_key(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        AzureProvider.from_config("a", config)
    assert KEY not in str(info.value)


def test_azure_refuses_a_from_name_unless_told() -> None:
    named = Message(sender="Shop <s@example.com>", to=["a@example.org"], subject="x", text="t")
    named.render()
    strict = AzureProvider.from_config("a", {"endpoint": "https://r.example", "access_key": KEY})
    with pytest.raises(UnsupportedFeature, match="From display name"):
        strict.build_request(named)
    lax = AzureProvider.from_config(
        "a", {"endpoint": "https://r.example", "access_key": KEY, "ignore_unsupported": True}
    )
    assert lax.build_request(named).json["senderAddress"] == "s@example.com"


def test_operation_id_is_stable_per_message() -> None:
    again = Message(
        sender="s@example.com",
        to=["a@example.org"],
        subject="x",
        text="t",
        message_id=ONE.message_id,
    )
    assert operation_id(ONE) == operation_id(again)
    assert ONE.message_id is not None and ONE.message_id.strip("<>") not in operation_id(ONE)


async def test_azure_request_is_signed_and_verify_reads_404() -> None:
    seen: list[HTTPRequest] = []

    def respond(request: HTTPRequest) -> Reply:
        seen.append(request)
        if request.method == "GET":
            return Reply(404, {"error": {"code": "NotFound", "message": "no such operation"}})
        return Reply(202, {"id": request.headers["operation-id"], "status": "Running"})

    async with serve(respond=respond) as server:
        provider = AzureProvider.from_config("a", {"endpoint": server.base_url, "access_key": KEY})
        try:
            await provider.verify()
            result = await provider.send(ONE)
        finally:
            await provider.aclose()
    assert result.provider_message_id == operation_id(ONE)
    key = base64.b64decode(KEY)
    for request in seen:
        digest = request.headers["x-ms-content-sha256"]
        assert digest == content_sha256(request.body)
        sign = signature(
            key,
            request.method,
            request.path,
            request.headers["x-ms-date"],
            f"127.0.0.1:{server.port}",
            digest,
        )
        assert request.headers["authorization"].endswith(f"&Signature={sign}")
    assert seen[0].path.startswith("/emails/operations/00000000-0000-0000-0000-000000000000?")


async def test_azure_409_means_an_earlier_attempt_arrived() -> None:
    answer = httpx.Response(409, json={"error": {"code": "Conflict", "message": "exists"}})
    provider = AzureProvider.from_config("a", {"endpoint": "https://r.example", "access_key": KEY})
    from mailer.providers.http import Answer

    error = provider.error_for(Answer.of(answer), ONE)
    assert isinstance(error, DeliveryUncertain)
    assert not error.failover


async def test_postal_raw_sends_our_mime_with_the_envelope() -> None:
    """send/raw: our Message-ID, an inline image and Bcc (in rcpt_to only) go out."""
    message = Message(
        sender="Shop <shop@example.com>",
        to=["a@example.org"],
        cc=["c@example.org"],
        bcc=["hidden@example.org"],
        subject="Grüße",
        text="t",
        html='<img src="cid:logo@x">',
        attachments=[
            Attachment(
                content=b"PNG",
                filename="logo.png",
                content_type="image/png",
                inline=True,
                content_id="logo@x",
            )
        ],
    )
    reply = Reply(
        200,
        {
            "status": "success",
            "time": 0,
            "flags": {},
            "data": {"message_id": "x@rp", "messages": {}},
        },
    )
    async with serve(respond=lambda request: reply) as server:
        provider = PostalProvider.from_config(
            "p", {"server_key": "k", "base_url": server.base_url, "endpoint": "raw"}
        )
        try:
            await provider.send(message)
        finally:
            await provider.aclose()
    request = server.log[0]
    assert request.path == "/api/v1/send/raw"
    body = request.json()
    assert body["mail_from"] == "shop@example.com"
    assert body["rcpt_to"] == ["a@example.org", "c@example.org", "hidden@example.org"]
    assert body["bounce"] is False
    raw = base64.b64decode(body["data"])
    assert raw == message.as_bytes()
    assert f"Message-ID: {message.message_id}".encode() in raw
    assert b"Content-ID: <logo@x>" in raw
    assert b"hidden@example.org" not in raw


async def test_postal_raw_refuses_tags_before_io() -> None:
    provider = PostalProvider.from_config(
        "p", {"server_key": "k", "base_url": "https://postal.example.com", "endpoint": "raw"}
    )
    tagged = Message(
        sender="s@example.com", to=["a@example.org"], subject="x", text="t", tags=["t"]
    )
    tagged.render()
    with pytest.raises(UnsupportedFeature, match="tags"):
        provider.build_request(tagged)
