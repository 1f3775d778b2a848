"""SMTPUTF8 (RFC 6531) and internationalized addresses in headers (RFC 6532).

A message with a non-ASCII local part goes to a server that offers SMTPUTF8 (aiosmtpd
with ``enable_SMTPUTF8``), with the parameter on MAIL FROM and the address in UTF-8 in
the headers; a server that does not offer it gets a PermanentError naming the extension
before any MAIL command.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import pytest

from mailer import Address, Mailer, Message, MessageError, UnsupportedFeature
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.wire import mail_command, rcpt_command
from mailer.testing import SMTPTestServer

pytestmark = pytest.mark.anyio


def eai_message(**kw: object) -> Message:
    base: dict[str, object] = {
        "sender": "José <josé@example.com>",
        "to": ["Ünïcode 用户 <用户@例子.广告>", "bob@example.org"],
        "reply_to": ["δοκιμή@παράδειγμα.δοκιμή"],
        "subject": "Grüße",
        "text": "hello",
    }
    base.update(kw)
    return Message(**base)


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# ------------------------------------------------------------------ addresses, headers


@pytest.mark.parametrize(
    ("raw", "email_"),
    [
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
        ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp"),
        ("josé.ñúñez@example.com", "josé.ñúñez@example.com"),
        ("Имя <иван@пример.рф>", "иван@xn--e1afmkfd.xn--p1ai"),
    ],
)
def test_internationalized_local_parts_are_accepted(raw: str, email_: str) -> None:
    assert Address.parse(raw).email == email_


@pytest.mark.parametrize(
    "raw",
    [
        "a\u202eb@example.com",  # RIGHT-TO-LEFT OVERRIDE: reorders what the reader sees
        "a\u200bb@example.com",  # ZERO WIDTH SPACE
        "a\u3000b@example.com",  # IDEOGRAPHIC SPACE
        "\ue000@example.com",  # private use
        '"ü"@example.com',  # quoted non-ASCII: refused rather than guessed
        "é" * 33 + "@example.com",  # 66 octets in UTF-8: over the 64-octet limit
    ],
)
def test_tricky_internationalized_local_parts_are_refused(raw: str) -> None:
    with pytest.raises(MessageError):
        Address.parse(raw)


def test_headers_carry_the_address_in_utf8_per_rfc6532() -> None:
    m = eai_message()
    assert m.smtputf8
    assert not eai_message(sender="a@example.com", to=["b@faß.de"], reply_to=[]).smtputf8
    data = m.as_bytes()
    head = data.split(b"\r\n\r\n", 1)[0]
    assert "<用户@xn--fsqu00a.xn--4rr70v>".encode() in head
    assert "From: =?utf-8?b?Sm9zw6k=?= <josé@example.com>".encode() in head
    assert b"=?utf-8?b?R3LDvMOfZQ==?=" in head  # the subject is still an encoded-word
    parsed = parse(data)
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        "用户@xn--fsqu00a.xn--4rr70v",
        "bob@example.org",
    ]
    assert parsed["To"].addresses[0].display_name == "Ünïcode 用户"
    assert parsed["Reply-To"].addresses[0].username == "δοκιμή"


def test_the_stdlib_fallback_renders_utf8_addresses_too() -> None:
    m = eai_message(subject="x" * 998)  # unfoldable: the fast renderer declines
    parsed = parse(m.as_bytes())
    assert parsed["From"].addresses[0].addr_spec == "josé@example.com"


def test_wire_commands() -> None:
    assert mail_command("josé@example.com", size=10, smtputf8=True) == (
        b"MAIL",
        "FROM:<josé@example.com>".encode(),
        b"SIZE=10",
        b"SMTPUTF8",
    )
    assert rcpt_command("用户@x.example", smtputf8=True) == (
        b"RCPT",
        "TO:<用户@x.example>".encode(),
    )
    with pytest.raises(MessageError, match="non-ASCII without SMTPUTF8"):
        mail_command("josé@example.com")


# --------------------------------------------------------------------------- servers


@pytest.mark.parametrize("pipelining", [False, True])
async def test_sent_with_smtputf8_when_the_server_offers_it(
    smtp_server: Callable[..., SMTPTestServer], pipelining: bool
) -> None:
    server = smtp_server(smtputf8=True, pipelining=pipelining)
    async with SMTPProvider.from_config("p", server.config(auth=None)) as provider:
        result = await provider.send(eai_message(bcc=["ähm@example.net"]))
    assert result.accepted == ["用户@xn--fsqu00a.xn--4rr70v", "bob@example.org", "ähm@example.net"]
    (envelope,) = server.state.messages
    assert envelope.mail_from == "josé@example.com"
    assert "SMTPUTF8" in [o.upper() for o in envelope.mail_options]
    assert envelope.rcpt_tos == result.accepted
    content = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
    assert parse(content)["To"].addresses[0].addr_spec == "用户@xn--fsqu00a.xn--4rr70v"
    assert "ähm" not in content.decode("utf-8")  # Bcc stays out of the headers


async def test_ascii_mail_does_not_ask_for_smtputf8(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server(smtputf8=True)
    async with SMTPProvider.from_config("p", server.config(auth=None)) as provider:
        await provider.send(Message(sender="a@example.com", to=["b@faß.de"], text="x"))
    (envelope,) = server.state.messages
    assert not any(o.upper() == "SMTPUTF8" for o in envelope.mail_options)
    assert envelope.rcpt_tos == ["b@xn--fa-hia.de"]


async def test_server_without_smtputf8_is_unsupported_naming_it(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    # UnsupportedFeature, not PermanentError: another provider (a server with SMTPUTF8)
    # may carry the message, so the Mailer fails over (see the test below).
    server = smtp_server(smtputf8=False)
    async with SMTPProvider.from_config("p", server.config(auth=None)) as provider:
        with pytest.raises(UnsupportedFeature, match="does not offer the SMTPUTF8 extension"):
            await provider.send(eai_message())
        # the connection is still good for ASCII mail: nothing of the refused one was sent
        await provider.send(Message(sender="a@example.com", to=["b@example.org"], text="x"))
    assert "MAIL" in server.state.verbs()
    assert len(server.state.messages) == 1
    assert all("josé" not in c for c in server.state.commands)


async def test_ses_refuses_internationalized_local_parts_before_any_request() -> None:
    from mailer.providers._ses import SESProvider

    provider = SESProvider.from_config(
        "ses",
        {
            "region": "eu-west-1",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "secret-example",
            "base_url": "https://ses.test",
        },
    )
    with pytest.raises(MessageError, match="non-ASCII local part"):
        await provider.send(eai_message())


async def test_a_server_without_smtputf8_fails_over_to_one_with_it(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    old, new = smtp_server(smtputf8=False), smtp_server(smtputf8=True)
    mailer = Mailer(
        [
            SMTPProvider.from_config("old", old.config(auth=None)),
            SMTPProvider.from_config("new", new.config(auth=None)),
        ]
    )
    async with mailer:
        result = await mailer.send(eai_message())
        assert result.provider == "new"
        assert mailer.health()["old"]["state"] == "closed"  # no verdict on its health
        # with only the old one, no provider can: a MessageError (UnsupportedFeature)
        alone = Mailer([SMTPProvider.from_config("o2", old.config(auth=None))])
        async with alone:
            with pytest.raises(MessageError, match="no provider of this Mailer can send"):
                await alone.send(eai_message())
    assert len(new.state.messages) == 1 and not old.state.messages
