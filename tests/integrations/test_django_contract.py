"""The contract of Django's email backends, kept by mailer.django.EmailBackend against
real SMTP servers on 127.0.0.1 (issue 21, items 25 to 29). Django's own tests of it run
in test_django_suite.py; these pin what they do not."""

from __future__ import annotations

import email
import email.policy
import logging
import pickle
import re
import smtplib
from collections.abc import Callable
from email.message import EmailMessage as StdMessage
from email.mime.text import MIMEText
from typing import Any

import pytest
from django.core import mail
from django.utils.translation import gettext_lazy

from mailer import AllProvidersFailed, MessageError
from mailer._integrations import django as integration
from mailer.testing import SMTPTestServer

from .conftest import smtp_config

UseMailer = Callable[[dict[str, Any]], None]
Servers = Callable[..., SMTPTestServer]


def received(server: SMTPTestServer, count: int = 1) -> list[StdMessage]:
    assert server.wait_for(lambda: len(server.state.messages) >= count, timeout=10)
    out = []
    for envelope in server.state.messages:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, StdMessage)
        out.append(parsed)
    return out


def test_send_messages_takes_an_iterator(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 25: an iterator is read once; the count and every mailer_result are right,
    and an error in one of its messages is raised without fail_silently."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    messages = [mail.EmailMessage("s", "b", "a@example.com", [f"r{i}@example.org"]) for i in (1, 2)]
    assert mail.get_connection().send_messages(iter(messages)) == 2
    assert [m.mailer_result.status for m in messages] == ["sent", "sent"]  # type: ignore[attr-defined]
    assert len(received(server, 2)) == 2

    bad = mail.EmailMessage(
        "s", "b", "a@example.com", ["r@example.org"], headers={"Date": "not a date"}
    )
    good = mail.EmailMessage("s", "b", "a@example.com", ["r3@example.org"])
    with pytest.raises(MessageError, match="RFC 5322 date"):
        mail.get_connection().send_messages(m for m in (good, bad))
    assert good.mailer_result.sent  # type: ignore[attr-defined]
    assert isinstance(bad.mailer_result.error, MessageError)  # type: ignore[attr-defined]
    assert mail.get_connection(fail_silently=True).send_messages(iter([bad])) == 0


def test_lazy_from_email(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 26: a lazy from_email (gettext_lazy) is sent like a str, as lazy to/cc are."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    sent = mail.send_mail(
        gettext_lazy("Subject"),
        "Content",
        gettext_lazy("Team <team@example.com>"),
        [gettext_lazy("anna@example.org")],
    )
    assert sent == 1
    (msg,) = received(server)
    assert msg["From"] == "Team <team@example.com>"
    assert server.state.messages[0].mail_from == "team@example.com"


def test_smtp_backend_keywords_are_accepted(
    smtp_server: Servers, use_mailer: UseMailer, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 27: get_connection() with the SMTP backend's keywords works; empty ones are
    ignored silently, the others are logged once each (by name, never by value)."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    integration._warned_keywords.clear()
    with caplog.at_level(logging.WARNING, logger="mailer.django"):
        quiet = mail.get_connection(username="", password="", timeout=None, use_tls=False)
        assert [r for r in caplog.records if r.name == "mailer.django"] == []
        for _ in range(3):  # a backend per send, as Django makes them: one warning each
            connection = mail.get_connection(
                host="smtp.example.com",
                username="u",
                password="hunter2",
                timeout=5,
                fancy_option=True,
            )
    ours = [r for r in caplog.records if r.name == "mailer.django"]  # not other loggers'
    # by message text: the secret redactor may have formatted a record already
    warned = sorted(re.search(r"keyword '(\w+)'", r.getMessage())[1] for r in ours)  # type: ignore[index]
    assert warned == ["fancy_option", "host", "password", "timeout", "username"]
    assert "hunter2" not in caplog.text
    assert "providers[].config.auth.password" in caplog.text
    email_message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    assert connection.send_messages([email_message]) == 1
    assert quiet.send_messages([mail.EmailMessage("s", "b", "a@example.com", ["q@example.org"])])
    assert len(received(server, 2)) == 2


def test_errors_are_smtp_exceptions(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 28: with the server down, what the backend raises is caught by ``except
    smtplib.SMTPException`` (and OSError) as Django's SMTP backend's errors are, and is
    still our AllProvidersFailed with its details."""
    server = smtp_server()
    port = server.port
    server.stop()
    use_mailer(
        {
            "providers": [
                {"type": "smtp", "name": "down", "config": {"host": "127.0.0.1", "port": port}}
            ],
            "retry": {"attempts": 1},
        }
    )
    message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    with pytest.raises(smtplib.SMTPException) as info:
        message.send()
    error = info.value
    assert isinstance(error, AllProvidersFailed) and isinstance(error, OSError)
    assert type(error).__name__ == "AllProvidersFailed"
    assert set(error.errors) == {"down"}
    assert "all providers failed" in str(error)
    assert message.mailer_result.error is not None  # type: ignore[attr-defined]
    inner = error.errors["down"]
    copy = pickle.loads(pickle.dumps(integration.smtp_error(inner)))  # noqa: S301 - our own bytes
    assert isinstance(copy, smtplib.SMTPException) and str(copy) == str(inner)
    again = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    assert again.send(fail_silently=True) == 0  # a new message: send() keeps its connection
    # a bad message is the caller's bug: a ValueError (as Django's BadHeaderError), not OSError
    bad = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"], headers={"Date": "x"})
    with pytest.raises(MessageError) as refused:
        bad.send()
    assert isinstance(refused.value, ValueError) and not isinstance(refused.value, OSError)


def test_mime_structure_matches_django(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 29: an attachment-only message has no empty text part, as Django's; an
    HTML-only body is a single text/html part (Django wraps it in a one-part
    multipart/alternative: docs/django.md); a nameless attachment is named attachment.<ext>
    (several APIs require a file name: docs/django.md)."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    only_files = mail.EmailMessage("s", "", "a@example.com", ["r@example.org"])
    only_files.attach("report.csv", "a,b\n1,2\n", "text/csv")
    only_files.attach(None, b"%PDF-1.4", "application/pdf")
    only_files.send()
    html_only = mail.EmailMultiAlternatives("s", "", "a@example.com", ["r@example.org"])
    html_only.attach_alternative("<p>hi</p>", "text/html")
    html_only.send()
    latin = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    part = MIMEText("Grüße", "plain", "iso-8859-1")
    part.add_header("Content-Disposition", "attachment", filename="latin.txt")
    latin.attach(part)
    latin.send()
    first, second, third = received(server, 3)
    assert first.get_content_type() == "multipart/mixed"
    parts = list(first.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/csv", "application/pdf"]
    assert [p.get_filename() for p in parts] == ["report.csv", "attachment.pdf"]
    assert parts[0].get_content_charset() == "utf-8"
    assert second.get_content_type() == "text/html"
    assert second.get_content().strip() == "<p>hi</p>"
    # a MIMEText in another charset keeps its text: re-encoded to UTF-8, labelled so
    (latin_part,) = third.iter_attachments()
    assert latin_part.get_content_charset() == "utf-8"
    assert latin_part.get_content() == "Grüße"


def test_date_and_sender_headers_from_django(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 17 through Django: extra_headers Date and Sender are sent as given."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    date = "Mon, 01 Jan 2024 00:00:00 +0000"
    headers = {"Date": date, "Sender": "bounces@example.com"}
    mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"], headers=headers).send()
    (msg,) = received(server)
    assert msg.get_all("Date") == [date]
    assert msg["Sender"] == "bounces@example.com"


def test_attached_eight_bit_email_message(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Item 16 through Django (#36119): an attached EmailMessage with 8-bit text."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    inner = mail.EmailMessage("Grüße", "Grüße aus Köln", "jörg@example.com", ["a@example.org"])
    inner.encoding = "utf-8"
    outer = mail.EmailMessage("fwd", "see attached", "a@example.com", ["r@example.org"])
    outer.attach(None, inner.message(), "message/rfc822")
    outer.send()
    (msg,) = received(server)
    (part,) = msg.iter_attachments()
    forwarded = part.get_payload(0)
    assert isinstance(forwarded, StdMessage)
    assert forwarded["Subject"] == "Grüße"
    assert forwarded.get_content().strip() == "Grüße aus Köln"


def test_what_the_excluded_tests_check(smtp_server: Servers, use_mailer: UseMailer) -> None:
    """Django's suite tests excluded for their encoding bytes or domainless addresses
    (test_django_suite.EXCLUDED): everything else they check, with real domains."""
    server = smtp_server()
    use_mailer(smtp_config(server))
    _ = gettext_lazy
    sent = [
        mail.EmailMessage(
            "Chère maman", "Je t'aime très fort", "from@example.com", ["to@example.com"]
        ),  # test_send_unicode
        mail.EmailMessage(
            from_email='"Firstname Sürname" <from@example.com>', to=["to@example.com"]
        ),  # test_send_verbose_name
        mail.EmailMessage(
            "Subject", "В южных морях " * 60, "from@example.com", ["to@example.com"]
        ),  # test_send_long_lines
        mail.EmailMessage(
            from_email=_("tester@example.com"),
            to=[_("to1@example.com"), _("to2@example.com")],
            cc=[_("cc1@example.com"), _("cc2@example.com")],
            bcc=[_("bcc@example.com")],
            reply_to=[_("reply@example.com")],
        ),  # test_lazy_addresses
    ]
    assert mail.get_connection().send_messages(sent) == 4
    # sent concurrently: told apart by what each one's From and Subject are
    by_kind = {}
    for envelope, parsed in zip(server.state.messages, received(server, 4), strict=True):
        by_kind[envelope.mail_from, str(parsed["Subject"] or "")] = (envelope, parsed)
    unicode = by_kind["from@example.com", "Chère maman"][1]
    verbose = by_kind["from@example.com", ""][1]
    long_envelope, long_lines = by_kind["from@example.com", "Subject"]
    lazy_envelope, lazy = by_kind["tester@example.com", ""]
    assert unicode["Subject"] == "Chère maman"
    assert unicode.get_content().rstrip("\r\n") == "Je t'aime très fort"
    assert verbose["From"] == "Firstname Sürname <from@example.com>"
    assert long_lines.get_content_type() == "text/plain"
    assert long_lines.get_content_charset() == "utf-8"
    assert long_lines.get_content().rstrip("\r\n") == "В южных морях " * 60
    data = long_envelope.original_content or long_envelope.content
    assert isinstance(data, bytes)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert lazy["From"] == "tester@example.com"
    assert lazy["To"] == "to1@example.com, to2@example.com"
    assert lazy["Cc"] == "cc1@example.com, cc2@example.com"
    assert lazy["Reply-To"] == "reply@example.com"
    assert lazy_envelope.rcpt_tos == [
        "to1@example.com",
        "to2@example.com",
        "cc1@example.com",
        "cc2@example.com",
        "bcc@example.com",
    ]
