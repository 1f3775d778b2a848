"""One-click unsubscribe headers: signed, expiring tokens; the same two headers whichever
provider sends; DKIM covers both (dkimpy verifies what the SMTP server received).

Real parts: the kit's SMTP server on 127.0.0.1, the session's RSA key (``dkim_key``) whose DNS
record dkimpy is served through ``dnsfunc``, and each HTTP adapter's request as built by
its walk (the JSON body, or Mailgun's form fields).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
from typing import Any

import dkim
import pytest

from mailer import ConfigError, Mailer, Message, MessageError
from mailer._unsubscribe import (
    InvalidToken,
    UnsubscribeConfig,
    make_token,
    read_token,
    unsubscribe_headers,
)
from mailer.providers import (
    MailgunProvider,
    PostmarkProvider,
    ResendProvider,
    SendGridProvider,
    SESProvider,
    SMTPProvider,
)
from mailer.testing import SMTPTestServer, dkim_key

pytestmark = pytest.mark.anyio

KEY = "k" * 16 + "unsubscribe-test-key-0123456789"
CONFIG = {"base_url": "https://mail.example.com/hooks", "key": KEY,
          "mailto": "unsub@example.com"}  # fmt: skip
_URL = re.compile(r"<https://mail\.example\.com/hooks/u/(?P<token>[^>]+)>")


def _message(**extra: Any) -> Message:
    return Message(**{"from": "news@example.com", "to": "ada@example.org", "subject": "News",
                      "text": "hello", "unsubscribe": True, **extra})  # fmt: skip


def test_token_round_trip_tamper_and_expiry() -> None:
    config = UnsubscribeConfig(**CONFIG)
    token = make_token(config, "Ada@Example.org", "news", now=1_000_000)
    claim = read_token(config, token, now=1_000_001)
    assert (claim.recipient, claim.list) == ("ada@example.org", "news")
    payload = token.split(".")[1]
    forged = (
        base64.urlsafe_b64encode(
            json.dumps({"r": "bob@example.org", "l": "news", "e": claim.expires}).encode()
        )
        .decode()
        .rstrip("=")
    )
    with pytest.raises(InvalidToken, match="signature"):
        read_token(config, token.replace(payload, forged), now=1_000_001)
    with pytest.raises(InvalidToken, match="signature"):
        read_token(config, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), now=1_000_001)
    with pytest.raises(InvalidToken, match="expired"):
        read_token(config, token, now=1_000_000 + config.max_age + 1)
    other = UnsubscribeConfig(**{**CONFIG, "key": "another-key-of-at-least-32-characters"})
    with pytest.raises(InvalidToken, match="signature"):
        read_token(other, token, now=1_000_001)
    with pytest.raises(InvalidToken, match="not an unsubscribe token"):
        read_token(config, "hello", now=1_000_001)


def test_config_rules_and_the_key_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="https") as info:
        Mailer([SMTPProvider.from_config("s", {"host": "127.0.0.1"})],
               unsubscribe={**CONFIG, "base_url": "http://mail.example.com"})  # fmt: skip
    assert KEY not in str(info.value)
    with pytest.raises(ConfigError, match="at least 32") as info:
        Mailer([SMTPProvider.from_config("s", {"host": "127.0.0.1"})],
               unsubscribe={**CONFIG, "key": "short-secret-key"})  # fmt: skip
    assert "short-secret-key" not in str(info.value)
    assert KEY not in repr(UnsubscribeConfig(**CONFIG))


def test_headers_need_one_recipient_and_a_config() -> None:
    config = UnsubscribeConfig(**CONFIG)
    with pytest.raises(MessageError, match="has 2"):
        unsubscribe_headers(config, _message(cc="bob@example.org"))
    with pytest.raises(MessageError, match="unsubscribe config"):
        unsubscribe_headers(None, _message())
    with pytest.raises(MessageError, match="sets List-Unsubscribe itself"):
        unsubscribe_headers(config, _message(headers={"List-Unsubscribe": "<mailto:x@y.z>"}))


async def test_smtp_carries_both_headers_under_the_dkim_signature() -> None:
    key = dkim_key()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return key.record.encode() if name.rstrip(b".") == b"s1._domainkey.example.com" else b""

    dkim_options = key.options(selector="s1")
    with SMTPTestServer(auth=False) as server:
        smtp = SMTPProvider.from_config("smtp", {**server.config(), "dkim": dkim_options})
        async with Mailer([smtp], unsubscribe=CONFIG) as mailer:
            await mailer.send(_message())
        [envelope] = server.state.messages
    data: bytes = envelope.original_content
    assert dkim.verify(data, dnsfunc=dns)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = _URL.search(str(parsed["List-Unsubscribe"]))
    assert match is not None and "<mailto:unsub@example.com?subject=" in parsed["List-Unsubscribe"]
    claim = read_token(UnsubscribeConfig(**CONFIG), match["token"])
    assert (claim.recipient, claim.list) == ("ada@example.org", "default")
    signature = data.split(b"DKIM-Signature:", 1)[1].split(b"\r\n\r\n", 1)[0]
    h_tag = re.search(rb"h=([^;]+);", re.sub(rb"\s+", b"", signature))
    assert h_tag is not None
    signed = h_tag[1].lower().split(b":")
    assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
    # a changed header breaks the signature: the covered bytes are these very headers
    assert not dkim.verify(data.replace(b"One-Click", b"One-Clack"), dnsfunc=dns)


def _json_headers(name: str, body: Any, fields: dict[str, str]) -> dict[str, str]:
    if name == "sendgrid":
        return dict(body["headers"])
    if name == "postmark":
        return {h["Name"]: h["Value"] for h in body["Headers"]}
    if name == "resend":
        return dict(body["headers"])
    if name == "mailgun":
        return {k[2:]: v for k, v in fields.items() if k.startswith("h:")}
    # SES: the headers travel inside the Raw MIME
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return {k: str(v) for k, v in parsed.items()}


@pytest.mark.parametrize("name", ["sendgrid", "postmark", "resend", "mailgun", "ses"])
async def test_every_http_provider_sends_the_same_two_headers(name: str) -> None:
    providers = {
        "sendgrid": lambda: SendGridProvider.from_config("x", {"api_key": "k"}),
        "postmark": lambda: PostmarkProvider.from_config("x", {"server_token": "t"}),
        "resend": lambda: ResendProvider.from_config("x", {"api_key": "re_k"}),
        "mailgun": lambda: MailgunProvider.from_config(
            "x", {"api_key": "k", "domain": "mg.example.com"}),
        "ses": lambda: SESProvider.from_config("x", {
            "region": "eu-west-1", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s"}),
    }  # fmt: skip
    config = UnsubscribeConfig(**CONFIG)
    message = _message()
    expected = unsubscribe_headers(config, message, now=2_000_000_000)
    sent = message.with_defaults({"headers": expected})
    request = providers[name]().build_request(sent)
    fields = {k: v[1] for k, v in request.files or []}
    headers = _json_headers(name, request.json, fields)
    assert headers["List-Unsubscribe"] == expected["List-Unsubscribe"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_message_false_wins_over_the_default() -> None:
    with SMTPTestServer(auth=False) as server:
        smtp = SMTPProvider.from_config("smtp", server.config())
        async with Mailer([smtp], unsubscribe=CONFIG, defaults={"unsubscribe": "news"}) as m:
            await m.send(_message(unsubscribe=False))
            await m.send(_message(unsubscribe=None))
        first, second = server.state.messages
    assert b"List-Unsubscribe" not in first.original_content
    match = _URL.search(second.original_content.decode())
    assert match is not None
    assert read_token(UnsubscribeConfig(**CONFIG), match["token"]).list == "news"
