"""What a new user's messages carry, delivered to real servers on 127.0.0.1 (issue 21,
items 15-17, 23 and 24): text attachments with their charset, 8-bit attached messages,
Sender and Date headers, messages from dicts and JSON, display names that show nothing."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from email.message import EmailMessage as StdMessage
from pathlib import Path

import pytest

from mailer import Address, Attachment, Mailer, Message, MessageError, SyncMailer
from mailer.testing import SMTPTestServer, dkim_key, serve

from .conftest import smtp_config

Servers = Callable[..., SMTPTestServer]

GREETING = "Grüße aus Köln"
#: an attached message with 8-bit headers and body, as Django attaches one (#36119)
EIGHT_BIT_MESSAGE = (
    "From: Jörg <joerg@example.com>\r\nTo: anna@example.org\r\nSubject: Grüße\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
).encode()


def deliver(server: SMTPTestServer, message: Message) -> StdMessage:
    """Send ``message`` through a SyncMailer to ``server``; what the server received."""
    with SyncMailer(smtp_config(server)) as mailer:
        mailer.send(message)
    assert server.wait_for(lambda: len(server.state.messages) >= 1, timeout=10)
    envelope = server.state.messages[-1]
    data = envelope.original_content or envelope.content
    assert isinstance(data, bytes)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, StdMessage)
    return parsed


def message(**fields: object) -> Message:
    data: dict[str, object] = {"sender": "app@example.com", "to": ["anna@example.org"]}
    return Message(**{**data, "text": "hi", **fields})


def test_text_attachments_say_their_charset(smtp_server: Servers, tmp_path: Path) -> None:
    """Item 15: UTF-8 text is labelled utf-8 (in memory or by path); other text, whose
    charset nobody named, goes as application/octet-stream instead of being misread."""
    server = smtp_server()
    note = tmp_path / "from-disk.txt"
    note.write_bytes(GREETING.encode())
    received = deliver(
        server,
        message(
            attachments=[
                Attachment(
                    filename="note.txt", content=GREETING.encode(), content_type="text/plain"
                ),
                Attachment(path=note),
                Attachment(filename="legacy.txt", content=GREETING.encode("latin-1")),
                Attachment(filename="data.csv", content=b"a,b\r\n1,2\r\n"),
            ]
        ),
    )
    parts = {p.get_filename(): p for p in received.iter_attachments()}
    assert isinstance(parts["note.txt"], StdMessage)
    for name in ("note.txt", "from-disk.txt"):
        part = parts[name]
        assert isinstance(part, StdMessage)
        assert part.get_content_type() == "text/plain"
        assert part.get_content_charset() == "utf-8"
        assert part.get_content() == GREETING
    legacy = parts["legacy.txt"]
    assert isinstance(legacy, StdMessage)
    assert legacy.get_content_type() == "application/octet-stream"
    assert legacy.get_content() == GREETING.encode("latin-1")
    csv = parts["data.csv"]
    assert isinstance(csv, StdMessage)
    assert csv.get_content_type() == "text/csv"
    assert csv.get_content_charset() == "utf-8"


@pytest.mark.anyio
async def test_json_api_sends_the_same_content_type() -> None:
    """Item 15 on a JSON API (Resend's ``content_type``), against a loopback server: the
    type the adapter sends is the attachment's mime_type(), the renderers' one rule."""
    async with serve("ok") as server:
        config = {
            "providers": [
                {
                    "type": "resend",
                    "name": "resend",
                    "config": {"api_key": "re_test", "base_url": f"http://127.0.0.1:{server.port}"},
                }
            ],
            "retry": {"attempts": 1},
        }
        async with Mailer.from_config(config) as mailer:
            await mailer.send(
                message(
                    attachments=[
                        Attachment(filename="note.txt", content=GREETING.encode()),
                        Attachment(filename="legacy.txt", content=GREETING.encode("latin-1")),
                    ]
                )
            )
    (body,) = [request.body for request in server.log]
    sent = json.loads(body)["attachments"]
    assert [a["content_type"] for a in sent] == [
        "text/plain; charset=utf-8",
        "application/octet-stream",
    ]


def test_eight_bit_attached_message_is_sent(smtp_server: Servers) -> None:
    """Item 16: an attached message with 8-bit headers and body goes as it is to a
    server that offers 8BITMIME (MAIL ... BODY=8BITMIME); to one that does not, it is
    re-encoded to 7 bits inside (RFC 2046 5.2.1 allows no base64 around it). Both read
    the same."""
    attached = Attachment(
        filename="forwarded.eml", content=EIGHT_BIT_MESSAGE, content_type="message/rfc822"
    )
    eight_bit, seven_bit = smtp_server(), smtp_server()
    seven_bit.state.eight_bit_mime = False
    for server, cte in ((eight_bit, "8bit"), (seven_bit, "7bit")):
        received = deliver(server, message(attachments=[attached]))
        (part,) = received.iter_attachments()
        assert part.get_content_type() == "message/rfc822"
        assert part["Content-Transfer-Encoding"] == cte
        inner = part.get_payload(0)
        assert isinstance(inner, StdMessage)
        assert inner["Subject"] == "Grüße"
        assert inner["From"] == "Jörg <joerg@example.com>"
        assert inner.get_content().strip() == GREETING
        (mail,) = [c for c in server.state.commands if c.startswith("MAIL")]
        assert ("BODY=8BITMIME" in mail) == (cte == "8bit")
        envelope = server.state.messages[-1]
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        assert raw.isascii() == (cte == "7bit")
        if cte == "8bit":  # byte for byte, line ends aside
            assert EIGHT_BIT_MESSAGE.rstrip(b"\r\n") in raw


def test_eight_bit_rides_on_smtputf8_and_never_under_dkim(smtp_server: Servers) -> None:
    """Item 16: SMTPUTF8 in use implies 8-bit data (RFC 6531 3.1), with no BODY= when
    the server does not list 8BITMIME; a DKIM-signed message goes 7-bit (the signature
    covers that rendering)."""
    attached = Attachment(
        filename="forwarded.eml", content=EIGHT_BIT_MESSAGE, content_type="message/rfc822"
    )
    utf8 = smtp_server(smtputf8=True)
    utf8.state.eight_bit_mime = False
    received = deliver(utf8, message(to=["josé@example.org"], attachments=[attached]))
    (part,) = received.iter_attachments()
    assert part["Content-Transfer-Encoding"] == "8bit"
    (mail,) = [c for c in utf8.state.commands if c.startswith("MAIL")]
    assert "SMTPUTF8" in mail and "BODY=" not in mail

    dkim = {"domain": "example.com", "selector": "s1", "private_key": dkim_key().pkcs8}
    signed = smtp_server()
    received = deliver(signed, message(attachments=[attached], dkim=dkim))
    assert "DKIM-Signature" in received
    (part,) = received.iter_attachments()
    assert part["Content-Transfer-Encoding"] == "7bit"


def test_sender_and_date_headers(smtp_server: Servers) -> None:
    """Item 17: Sender (one mailbox, our address rules) and Date (RFC 5322, with a zone)
    are accepted; the Date given is the message's only Date."""
    server = smtp_server()
    date = "Tue, 01 Jul 2025 10:00:00 +0200"
    received = deliver(
        server, message(headers={"Sender": "Bounces Ü <bounces@example.com>", "Date": date})
    )
    assert received.get_all("Date") == [date]
    assert received["Sender"] == "Bounces Ü <bounces@example.com>"
    refused = {
        "Sender": ["a@example.com, b@example.com", "not an address", "x@"],
        "Date": ["yesterday", "Tue, 01 Jul 2025 10:00:00", "2025-07-01T10:00:00Z"],
    }
    for name, values in refused.items():
        for value in values:
            with pytest.raises(MessageError, match=name):
                message(headers={name: value})
    with pytest.raises(MessageError, match="more than once"):
        message(headers={"Date": date, "date": date})


def test_messages_from_dicts_and_json(smtp_server: Servers, tmp_path: Path) -> None:
    """Item 23: model_validate(dict) raises a MessageError that never quotes the input,
    and a message with a path attachment survives model_dump_json/model_validate_json."""
    secret = "the body holds a password: hunter2"
    with pytest.raises(MessageError) as info:
        Message.model_validate({"to": ["not-an-address"], "text": secret, "subject": secret})
    assert "hunter2" not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None

    path = tmp_path / "report.txt"
    path.write_bytes(GREETING.encode())
    original = message(attachments=[Attachment(path=path)])
    reloaded = Message.model_validate_json(original.model_dump_json())
    assert reloaded.attachments[0].path is None
    assert reloaded.attachments[0].content == GREETING.encode()
    assert reloaded.message_id == original.message_id
    server = smtp_server()
    (part,) = deliver(server, reloaded).iter_attachments()
    assert part.get_filename() == "report.txt"
    assert part.get_content() == GREETING


def test_invisible_and_bidi_display_names_are_refused(smtp_server: Servers) -> None:
    """Item 24: a name that shows nothing, or that a bidi control reorders, is refused;
    real names in any script are not."""
    for name in ["\u200b", "\u200b\u200d", "\u3164", "\u202eexample.com", "Bank\u2067 x"]:
        with pytest.raises(MessageError, match="display name"):
            Address(name=name, email="app@example.com")
        with pytest.raises(MessageError, match="display name"):
            message(to=[f'"{name}" <anna@example.org>'])
    server = smtp_server()
    names = ["Анна", "عائشة", "José", "李小龍"]
    received = deliver(
        server, message(to=[Address(name=n, email="anna@example.org") for n in names])
    )
    assert [a.display_name for a in received["To"].addresses] == names
