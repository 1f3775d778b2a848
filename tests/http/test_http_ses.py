"""SES v2 outbound-emails: SigV4 (by httpx-auth), Simple vs Raw content, error types."""

from __future__ import annotations

import base64
import hashlib
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from mailer import (
    Attachment,
    AuthError,
    ConfigError,
    Message,
    MessageError,
    PermanentError,
    RateLimited,
)
from mailer.providers._ses import SESProvider
from mailer.providers.http.correlation import tag_safe

pytestmark = pytest.mark.anyio

SECRET = "ses-secret-access-key-xyz"
URL = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
CONFIG = {"region": "eu-west-1", "access_key_id": "AKIDEXAMPLE", "secret_access_key": SECRET}


def make(**config: Any) -> SESProvider:
    return SESProvider.from_config("ses", {**CONFIG, **config})


def ok() -> httpx.Response:
    return httpx.Response(200, json={"MessageId": "0102-ses-1"})


async def test_simple_request_is_signed(stubbed: Any) -> None:
    message = Message(
        sender="Zoë Shop <shop@example.com>",
        to=["Ann <ann@example.org>"],
        cc=["cat@example.org"],
        bcc=["dan@example.org"],
        reply_to=["help@example.com"],
        subject="Your order",
        text="plain",
        html="<p>html</p>",
        metadata={"order_id": "42", "campaign": "spring-1"},
    )
    sent = await stubbed(make(configuration_set="tracking"), message, "POST", URL, ok())
    request = sent.request
    assert request.method == "POST"
    assert request.url.path == "/v2/email/outbound-emails"
    auth = request.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/ses/aws4_request" in auth
    assert "SignedHeaders=" in auth and "Signature=" in auth
    assert request.headers["x-amz-date"]
    assert request.headers["x-amz-content-sha256"] == hashlib.sha256(request.content).hexdigest()
    assert SECRET not in str(request.headers)
    body = sent.json()
    sender = body["FromEmailAddress"]
    assert sender.isascii()  # SES wants encoded-words for non-ASCII display names
    assert str(make_header(decode_header(sender))) == "Zoë Shop <shop@example.com>"
    assert body["Destination"] == {"ToAddresses": ["Ann <ann@example.org>"],
                                   "CcAddresses": ["cat@example.org"],
                                   "BccAddresses": ["dan@example.org"]}  # fmt: skip
    assert body["ReplyToAddresses"] == ["help@example.com"]
    assert body["Content"] == {"Simple": {
        "Subject": {"Data": "Your order", "Charset": "UTF-8"},
        "Body": {"Text": {"Data": "plain", "Charset": "UTF-8"},
                 "Html": {"Data": "<p>html</p>", "Charset": "UTF-8"}}}}  # fmt: skip
    assert body["EmailTags"] == [{"Name": "order_id", "Value": "42"},
                                 {"Name": "campaign", "Value": "spring-1"},
                                 {"Name": "mailer_message_id",
                                  "Value": tag_safe(message.message_id)}]  # fmt: skip
    assert body["ConfigurationSetName"] == "tracking"
    assert sent.result.provider_message_id == "0102-ses-1"
    assert sent.result.message_id == message.message_id


@pytest.mark.parametrize(
    "extra",
    [
        {"attachments": [Attachment(content=b"%PDF", filename="a.pdf")]},
        {"headers": {"X-Campaign": "spring"}},
    ],
)
async def test_attachments_or_headers_send_raw_mime(stubbed: Any, extra: dict[str, Any]) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], bcc=["hidden@example.org"],
                      subject="x", text="t", **extra)  # fmt: skip
    sent = await stubbed(make(), message, "POST", URL, ok())
    body = sent.json()
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert raw == message.as_bytes()
    assert b"hidden@example.org" not in raw  # Bcc is envelope only
    assert body["Destination"]["BccAddresses"] == ["hidden@example.org"]


async def test_session_token_header(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    sent = await stubbed(make(session_token="sts-token-value"), message, "POST", URL, ok())
    assert sent.request.headers["x-amz-security-token"] == "sts-token-value"
    assert "x-amz-security-token" in sent.request.headers["Authorization"]


async def test_plain_tags_and_bad_metadata_are_unsupported() -> None:
    with pytest.raises(MessageError, match="tags"):
        await make().send(Message(sender="s@example.com", to=["a@example.org"], tags=["t"]))
    with pytest.raises(MessageError, match="metadata 'a b'"):
        await make().send(Message(sender="s@example.com", to=["a@example.org"],
                                  metadata={"a b": "c"}))  # fmt: skip


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "MessageRejected", PermanentError),
        (400, "SendingPausedException", AuthError),
        (400, "AccountSuspendedException", AuthError),
        (400, "MailFromDomainNotVerifiedException", AuthError),
        (429, "TooManyRequestsException", RateLimited),
        (400, "LimitExceededException", RateLimited),
        (403, "SignatureDoesNotMatch", AuthError),
    ],
)
async def test_error_types(stubbed: Any, status: int, kind: str, expected: type) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    answer = httpx.Response(status, headers={"x-amzn-ErrorType": f"{kind}:http://internal/"},
                            json={"message": f"{kind} happened"})  # fmt: skip
    sent = await stubbed(make(), message, "POST", URL, answer)
    assert type(sent.error) is expected
    assert f"{kind} happened" in str(sent.error)
    assert sent.error.code == status


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    provider = SESProvider.from_config("ses", {"region": "us-east-1"})
    assert provider.config.access_key_id.get_secret_value() == "AKIDENV"
    assert provider.base_url == "https://email.us-east-1.amazonaws.com"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="access_key_id"):
        SESProvider.from_config("ses", {"region": "us-east-1"})


def test_bad_region_and_dsn() -> None:
    with pytest.raises(ConfigError, match="region"):
        make(region="mars")
    cfg = SESProvider.config_from_url(urlsplit("ses://AKID:se%2Fcret@default"),
                                      {"region": "eu-west-1"})  # fmt: skip
    assert cfg == {"region": "eu-west-1", "access_key_id": "AKID", "secret_access_key": "se/cret"}
