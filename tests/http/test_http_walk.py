"""What the shared walk does for every adapter: Bcc-only messages, RFC 2047 header values,
recipient de-duplication, the body rule; each checked on the request that goes out."""

from __future__ import annotations

import json
from email.header import decode_header, make_header
from typing import Any

import httpx
import pytest

from mailer import Message, MessageError, UnsupportedFeature
from mailer.providers._mailgun import MailgunProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers._sendgrid import SendGridProvider
from mailer.providers._ses import SESProvider
from mailer.providers.http import HTTPProvider

pytestmark = pytest.mark.anyio

ADAPTERS: dict[str, tuple[type[HTTPProvider], dict[str, Any], str, httpx.Response]] = {
    "sendgrid": (SendGridProvider, {"api_key": "k" * 8},
                 "https://api.sendgrid.com/v3/mail/send", httpx.Response(202)),
    "postmark": (PostmarkProvider, {"server_token": "t" * 8}, "https://api.postmarkapp.com/email",
                 httpx.Response(200, json={"ErrorCode": 0, "MessageID": "x"})),
    "resend": (ResendProvider, {"api_key": "r" * 8}, "https://api.resend.com/emails",
               httpx.Response(200, json={"id": "x"})),
    "mailgun": (MailgunProvider, {"api_key": "m" * 8, "domain": "mg.example.com"},
                "https://api.mailgun.net/v3/mg.example.com/messages",
                httpx.Response(200, json={"id": "x"})),
    "ses": (SESProvider, {"region": "eu-west-1", "access_key_id": "AKID",
                          "secret_access_key": "s" * 8},
            "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
            httpx.Response(200, json={"MessageId": "x"})),
}  # fmt: skip


async def _send(stubbed: Any, name: str, message: Message) -> Any:
    cls, config, url, answer = ADAPTERS[name]
    return await stubbed(cls.from_config(name, config), message, "POST", url, answer)


@pytest.mark.parametrize("name", ["sendgrid", "postmark", "resend", "mailgun"])
async def test_bcc_only_is_refused_before_io_where_to_is_required(stubbed: Any, name: str) -> None:
    message = Message(sender="s@example.com", bcc=["b@example.org"], subject="x", text="t")
    cls, config, _, _ = ADAPTERS[name]
    with pytest.raises(MessageError, match="needs at least one To"):
        cls.from_config(name, config).build_request(message)
    # and nothing is sent: the Provider.send path refuses the same way, before I/O, as
    # UnsupportedFeature (a MessageError too), so that the Mailer fails over
    sent = await _send(stubbed, name, message)
    assert isinstance(sent.error, UnsupportedFeature) and sent.calls == 0


async def test_ses_sends_bcc_only_in_destination(stubbed: Any) -> None:
    message = Message(sender="s@example.com", bcc=["b@example.org"], subject="x", text="t")
    sent = await _send(stubbed, "ses", message)
    assert sent.error is None
    assert sent.json()["Destination"] == {"BccAddresses": ["b@example.org"]}


def _header_value(name: str, request: httpx.Request) -> str:
    if name == "mailgun":
        marker = b'name="h:X-Greeting"\r\n\r\n'
        start = request.content.index(marker) + len(marker)
        return request.content[start:].split(b"\r\n", 1)[0].decode("ascii")
    body = json.loads(request.content)
    if name == "postmark":
        return next(h["Value"] for h in body["Headers"] if h["Name"] == "X-Greeting")
    return str(body["headers"]["X-Greeting"])


@pytest.mark.parametrize("name", ["sendgrid", "postmark", "resend", "mailgun"])
async def test_non_ascii_header_values_are_rfc2047_encoded(stubbed: Any, name: str) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      headers={"X-Greeting": "Grüße aus Köln"})  # fmt: skip
    sent = await _send(stubbed, name, message)
    value = _header_value(name, sent.request)
    assert value.isascii()
    assert value.startswith("=?utf-8?b?")
    assert str(make_header(decode_header(value))) == "Grüße aus Köln"


async def test_ses_raw_carries_the_encoded_header(stubbed: Any) -> None:
    import base64

    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      headers={"X-Greeting": "Grüße"})  # fmt: skip
    sent = await _send(stubbed, "ses", message)
    raw = base64.b64decode(sent.json()["Content"]["Raw"]["Data"])
    assert b"X-Greeting: =?utf-8?b?" in raw


async def test_postmark_dedupes_recipients_across_to_and_cc(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], cc=["A@Example.org",
                      "c@example.org"], bcc=["C@example.org"], subject="x", text="t")  # fmt: skip
    body = (await _send(stubbed, "postmark", message)).json()
    assert body["To"] == "a@example.org"
    assert body["Cc"] == "c@example.org"
    assert "Bcc" not in body


@pytest.mark.parametrize("name", list(ADAPTERS))
async def test_html_only_message_has_no_text_part(stubbed: Any, name: str) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", html="<p>h</p>")
    request = (await _send(stubbed, name, message)).request
    assert b"<p>h</p>" in request.content
    assert b'"TextBody"' not in request.content and b'name="text"' not in request.content


async def test_provider_options_deep_merge_into_the_body_name_over_type(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      provider_options={
                          "sendgrid": {"tracking_settings": {"click_tracking": {"enable": False},
                                                             "open_tracking": {"enable": False}}},
                          "sendgrid-eu": {"tracking_settings": {"open_tracking": {"enable": True}}},
                          "postmark": {"TrackOpens": True},  # another provider's: not sent
                      })  # fmt: skip
    cls, config, url, answer = ADAPTERS["sendgrid"]
    sent = await stubbed(cls.from_config("sendgrid-eu", config), message, "POST", url, answer)
    body = sent.json()
    assert body["tracking_settings"] == {"click_tracking": {"enable": False},
                                         "open_tracking": {"enable": True}}  # fmt: skip
    assert "TrackOpens" not in body and body["subject"] == "x"


async def test_provider_options_are_form_fields_on_mailgun(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      provider_options={"mailgun": {"o:tracking": False,
                                                    "o:deliverytime-optimize-period": "24h",
                                                    "t:variables": ["a", 1]}})  # fmt: skip
    content = (await _send(stubbed, "mailgun", message)).request.content
    for name, value in [("o:tracking", b"false"), ("o:deliverytime-optimize-period", b"24h"),
                        ("t:variables", b"a"), ("t:variables", b"1")]:  # fmt: skip
        assert f'name="{name}"\r\n\r\n'.encode() + value + b"\r\n" in content
    nested = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                     provider_options={"mailgun": {"o:x": {"y": 1}}})  # fmt: skip
    refused = await _send(stubbed, "mailgun", nested)
    assert isinstance(refused.error, UnsupportedFeature) and refused.calls == 0
    assert "takes form fields" in str(refused.error)


@pytest.mark.parametrize("name", list(ADAPTERS))
async def test_envelope_is_refused_before_io(stubbed: Any, name: str) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      envelope={"from": "bounce@example.com"})  # fmt: skip
    sent = await _send(stubbed, name, message)
    assert isinstance(sent.error, UnsupportedFeature) and sent.calls == 0
    assert "envelope different from the headers" in str(sent.error)
