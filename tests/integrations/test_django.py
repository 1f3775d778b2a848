"""mailer.django.EmailBackend with real Django, delivering to real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import multiprocessing
import time
from collections.abc import Callable
from email.message import EmailMessage as StdMessage
from email.mime.image import MIMEImage
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.test import Client

from mailer import ConfigError, MessageError, RecipientsRefused
from mailer.django import EmailBackend, get_mailer
from mailer.testing import SMTPTestServer

from .conftest import smtp_config

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)

UseMailer = Callable[[dict[str, Any]], None]
Servers = Callable[..., SMTPTestServer]


def received(server: SMTPTestServer, count: int = 1) -> list[StdMessage]:
    assert server.wait_for(lambda: len(server.state.messages) >= count, timeout=10)
    return [
        email.message_from_bytes(env.original_content or env.content, policy=email.policy.default)
        for env in server.state.messages
    ]  # type: ignore[misc]


@pytest.fixture(scope="module")
def database() -> None:
    call_command("migrate", verbosity=0, interactive=False)


def test_send_mail_is_delivered(smtp_server: Servers, use_mailer: UseMailer) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    count = mail.send_mail(
        "Hello from Django", "The body.", "Team <team@example.com>", ["alice@example.org"]
    )
    assert count == 1
    (msg,) = received(server)
    env = server.state.messages[0]
    assert env.mail_from == "team@example.com"
    assert env.rcpt_tos == ["alice@example.org"]
    assert msg["Subject"] == "Hello from Django"
    assert msg["From"] == "Team <team@example.com>"
    assert msg.get_content().strip() == "The body."


def test_alternatives_attachments_and_inline_image(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    message = mail.EmailMultiAlternatives(
        subject="Your invoice",
        body="See the attached invoice.",
        from_email="billing@example.com",
        to=["alice@example.org"],
        cc=["carol@example.org"],
        bcc=["audit@example.org"],
        reply_to=["help@example.com"],
        headers={"X-Campaign": "invoices", "Message-ID": "<inv-42@example.com>"},
    )
    message.attach_alternative('<p>Invoice <img src="cid:logo@example.com"></p>', "text/html")
    message.attach("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")
    message.attach("notes.txt", "plain text notes ü", "text/plain")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@example.com>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message.attach(logo)
    message.tags = ["billing"]  # type: ignore[attr-defined]
    message.metadata = {"invoice": 42}  # type: ignore[attr-defined]

    assert message.send() == 1

    (msg,) = received(server)
    env = server.state.messages[0]
    assert sorted(env.rcpt_tos) == ["alice@example.org", "audit@example.org", "carol@example.org"]
    assert msg["Bcc"] is None
    assert msg["Cc"] == "carol@example.org"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["X-Campaign"] == "invoices"
    assert msg["Message-ID"] == "<inv-42@example.com>"
    assert msg.get_content_type() == "multipart/mixed"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "See the attached invoice."
    assert html is not None and "cid:logo@example.com" in html.get_content()
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo@example.com>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    files = {p.get_filename(): p for p in msg.iter_attachments()}
    assert files["invoice.pdf"].get_content() == b"%PDF-1.4 fake"
    assert files["invoice.pdf"].get_content_type() == "application/pdf"
    assert files["notes.txt"].get_payload(decode=True).decode() == "plain text notes ü"

    result = message.mailer_result  # type: ignore[attr-defined]
    assert result.sent and result.error is None
    assert result.provider == "primary"
    assert result.message_id == "<inv-42@example.com>"
    assert sorted(result.accepted) == sorted(env.rcpt_tos)
    assert result.rejected == {}
    assert [a.outcome for a in result.result.attempts] == ["sent"]


def test_html_only_body_and_header_display_names(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    message = mail.EmailMessage(
        "Hi", "<b>bold</b>", "team@example.com", ["bob@example.org"],
        headers={"From": "The Team <team@example.com>", "To": "Bob <bob@example.org>"},
    )  # fmt: skip
    message.content_subtype = "html"
    assert message.send() == 1
    (msg,) = received(server)
    assert msg["From"] == "The Team <team@example.com>"
    assert msg["To"] == "Bob <bob@example.org>"
    assert msg.get_content_type() == "text/html"


def test_password_reset_view_sends_the_link(
    smtp_server: Servers, use_mailer: UseMailer, database: None
) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    User.objects.create_user("dora", "dora@example.org", "pw")
    try:
        response = Client().post("/accounts/password_reset/", {"email": "dora@example.org"})
        assert response.status_code == 302
        assert response["Location"] == "/accounts/password_reset/done/"
        (msg,) = received(server)
        assert server.state.messages[0].rcpt_tos == ["dora@example.org"]
        assert msg["From"] == "Example Site <noreply@example.com>"
        assert "Password reset" in msg["Subject"]
        body = msg.get_body(("plain",))
        assert body is not None
        assert "http://testserver/accounts/reset/" in body.get_content()
    finally:
        User.objects.filter(username="dora").delete()


def test_send_messages_runs_concurrently_and_counts(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    server.state.fail("DATA_END", "delay:0.4")
    use_mailer(smtp_config(server))
    messages = [
        mail.EmailMessage(f"n{i}", "x", "a@example.com", [f"r{i}@example.org"]) for i in range(6)
    ]
    messages.append(mail.EmailMessage("nobody", "x", "a@example.com", []))  # skipped, as Django
    started = time.monotonic()
    with mail.get_connection() as connection:
        assert connection.send_messages(messages) == 6
    took = time.monotonic() - started
    assert len(server.state.messages) == 6
    assert server.state.peak > 1  # more than one connection at once
    assert took < 6 * 0.4  # sequential sends would take at least this long
    assert all(m.mailer_result.sent for m in messages[:6])  # type: ignore[attr-defined]
    assert not hasattr(messages[6], "mailer_result")


def test_failover_to_the_second_server(smtp_server: Servers, use_mailer: UseMailer) -> None:
    down, up = smtp_server(), smtp_server()
    down.state.fail("MAIL", "451 4.3.0 try later")
    use_mailer(smtp_config(down, up))
    message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    assert message.send() == 1
    received(up)
    assert down.state.messages == []
    result = message.mailer_result  # type: ignore[attr-defined]
    assert result.provider == "secondary"
    assert [a.provider for a in result.result.attempts] == ["primary", "secondary"]


def test_errors_raise_or_are_swallowed_with_fail_silently(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    server.state.fail("RCPT", "550 5.1.1 no such user", match="nobody@")
    use_mailer(smtp_config(server))
    bad = mail.EmailMessage("s", "b", "a@example.com", ["nobody@example.org"])
    good = mail.EmailMessage("s", "b", "a@example.com", ["ok@example.org"])
    with pytest.raises(RecipientsRefused):
        mail.get_connection().send_messages([bad, good])
    # the good one went out anyway: one bad message never stops the others
    received(server)
    assert good.mailer_result.sent  # type: ignore[attr-defined]
    assert isinstance(bad.mailer_result.error, RecipientsRefused)  # type: ignore[attr-defined]
    assert not bad.mailer_result.possibly_delivered  # type: ignore[attr-defined]

    assert mail.get_connection(fail_silently=True).send_messages([bad]) == 0
    assert isinstance(bad.mailer_result.error, RecipientsRefused)  # type: ignore[attr-defined]


def test_fail_silently_does_not_hide_bugs(smtp_server: Servers, use_mailer: UseMailer) -> None:
    use_mailer(smtp_config(smtp_server()))
    message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    message.attachments.append(42)  # not an attachment: a programming error, not ours
    with pytest.raises(TypeError):
        mail.get_connection(fail_silently=True).send_messages([message])


def test_bad_messages_are_refused_before_sending(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    cases: list[tuple[mail.EmailMessage, str]] = [
        (mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"],
                           headers={"From": "x@example.com, y@example.com"}), "one mailbox"),
        (mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"],
                           headers={"Date": "Mon, 1 Jan 2024"}), "RFC 5322 date"),
        (mail.EmailMessage("s\r\nBcc: x@evil.example", "b", "a@example.com",
                           ["r@example.org"]), "control character"),
    ]  # fmt: skip
    amp = mail.EmailMultiAlternatives("s", "b", "a@example.com", ["r@example.org"])
    amp.attach_alternative("<amp>", "text/x-amp-html")
    cases.append((amp, "text/x-amp-html"))
    enveloped = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    enveloped.envelope = "bounces@example.com"  # type: ignore[attr-defined]
    cases.append((enveloped, "envelope must be a mapping"))
    unknown = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    unknown.providers = ["nope"]  # type: ignore[attr-defined]
    cases.append((unknown, "names no provider"))
    for message, why in cases:
        with pytest.raises(MessageError, match=why):
            message.send()
        assert isinstance(message.mailer_result.error, MessageError)  # type: ignore[attr-defined]
    assert server.state.messages == []


def test_mailers_style_options_and_settings_file(
    smtp_server: Servers, tmp_path: Path, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    # Django 6.1's MAILERS passes OPTIONS to the backend as keyword arguments.
    backend = mail.get_connection("mailer.django.EmailBackend", config=smtp_config(server))
    assert backend.send_messages([mail.EmailMessage("a", "b", "s@example.com", ["r@example.org"])])
    received(server)

    path = tmp_path / "mailer.toml"
    path.write_text(
        f"""
[django]
opentelemetry = false

[[providers]]
type = "smtp"
name = "from-file"
config = {{ host = "127.0.0.1", port = {server.port} }}
"""
    )
    use_mailer(str(path))  # type: ignore[arg-type]
    message = mail.EmailMessage("c", "d", "s@example.com", ["r@example.org"])
    assert message.send() == 1
    assert message.mailer_result.provider == "from-file"  # type: ignore[attr-defined]
    received(server, 2)

    # issue 21 item 27: Django's SMTP keywords are taken and ignored (tested in detail by
    # test_django_contract.py), no longer a ConfigError
    EmailBackend(host="smtp.example.com")
    use_mailer({"providers": ["smtp://127.0.0.1:1"], "django": {"outbox": True}})
    with pytest.raises(ConfigError, match="'django' table"):
        mail.send_mail("s", "b", "a@example.com", ["r@example.org"])


def test_one_mailer_per_process(smtp_server: Servers, use_mailer: UseMailer) -> None:
    use_mailer(smtp_config(smtp_server()))
    assert get_mailer() is get_mailer()
    assert EmailBackend() is not EmailBackend()  # cheap: backends share the one Mailer


def _child_sends(queue: Any) -> None:
    try:
        message = mail.EmailMessage("from child", "b", "a@example.com", ["c@example.org"])
        queue.put(("ok", message.send(), id(get_mailer())))
    except BaseException as exc:  # reported to the parent
        queue.put(("error", repr(exc), 0))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_forked_worker_builds_its_own_mailer(smtp_server: Servers, use_mailer: UseMailer) -> None:
    server = smtp_server()
    config = smtp_config(server)
    config["providers"][0]["config"]["pool"] = True
    use_mailer(config)
    assert mail.EmailMessage("parent 1", "b", "a@example.com", ["p@example.org"]).send() == 1
    parent_mailer = get_mailer()

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_sends, args=(queue,))
    child.start()
    status, value, _ = queue.get(timeout=30)
    child.join(timeout=30)
    assert (status, value) == ("ok", 1)

    # The parent's pooled connection survived the child (which must not QUIT it).
    assert mail.EmailMessage("parent 2", "b", "a@example.com", ["p@example.org"]).send() == 1
    assert get_mailer() is parent_mailer
    msgs = received(server, 3)
    assert sorted(m["Subject"] for m in msgs) == ["from child", "parent 1", "parent 2"]
    assert server.state.connections == 2  # the parent's one, reused, and the child's own


def test_anymail_only_attributes_are_refused(smtp_server: Servers, use_mailer: UseMailer) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    message.template_id = "welcome"  # type: ignore[attr-defined]
    with pytest.raises(MessageError, match="django-anymail attribute 'template_id'"):
        message.send()
    assert server.state.messages == []


def test_forwarded_message_and_nameless_attachment(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    inner = mail.EmailMessage("the original", "inner body", "x@example.com", ["y@example.org"])
    message = mail.EmailMessage(
        "Fwd", "see attached", "a@example.com", ["r@example.org"],
        headers={"Reply-To": '"Help, Desk" <help@example.com>, ops@example.com'},
    )  # fmt: skip
    message.attach(None, inner, "message/rfc822")
    message.attach(None, b"\x00\x01", "application/octet-stream")
    assert message.send() == 1
    (msg,) = received(server)
    assert msg["Reply-To"] == '"Help, Desk" <help@example.com>, ops@example.com'
    parts = list(msg.iter_attachments())
    assert [p.get_content_type() for p in parts] == ["message/rfc822", "application/octet-stream"]
    forwarded = email.message_from_bytes(parts[0].get_payload(decode=True) or b"")
    if parts[0].is_multipart():  # the stdlib parses a message/rfc822 part into its message
        forwarded = parts[0].get_payload(0)
    assert forwarded["Subject"] == "the original"
    assert parts[1].get_filename() == "attachment.bin"
    assert parts[1].get_content() == b"\x00\x01"


def test_opentelemetry_option_instruments_the_process_mailer(
    smtp_server: Servers, use_mailer: UseMailer
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the global one: set once per process
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another test set the global tracer provider first")
    server = smtp_server()
    use_mailer(smtp_config(server, django={"opentelemetry": True}))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("view") as view:
        assert mail.send_mail("s", "b", "a@example.com", ["r@example.org"]) == 1
    (send,) = [s for s in exporter.get_finished_spans() if s.name == "send"]
    # the span crossed from the request thread to the Mailer's loop thread
    assert send.parent is not None and send.parent.span_id == view.get_span_context().span_id
    assert send.attributes is not None and send.attributes["provider"] == "primary"


def test_per_message_providers(smtp_server: Servers, use_mailer: UseMailer) -> None:
    first, second = smtp_server(), smtp_server()
    use_mailer(smtp_config(first, second))
    message = mail.EmailMessage("s", "b", "a@example.com", ["r@example.org"])
    message.providers = ["secondary"]  # type: ignore[attr-defined]
    assert message.send() == 1
    received(second)
    assert first.state.messages == []
    assert message.mailer_result.provider == "secondary"  # type: ignore[attr-defined]


def test_envelope_headers_and_provider_options(smtp_server: Servers, use_mailer: UseMailer) -> None:
    server = smtp_server()
    use_mailer(smtp_config(server))
    # Django's rule: from_email and to/cc/bcc are the envelope; the headers what readers see
    shown = mail.EmailMessage(
        "s", "b", "bounces@example.com", ["ann@example.org", "ben@example.org"],
        headers={"From": "News <news@example.com>", "To": "Subscribers <list@example.org>"},
    )  # fmt: skip
    assert shown.send() == 1
    (msg,) = received(server)
    env = server.state.messages[0]
    assert env.mail_from == "bounces@example.com"
    assert env.rcpt_tos == ["ann@example.org", "ben@example.org"]
    assert msg["From"] == "News <news@example.com>"
    assert msg["To"] == "Subscribers <list@example.org>"

    explicit = mail.EmailMessage("s", "b", "app@example.com", ["cat@example.org"])
    explicit.envelope = {"from": "verp+cat@example.com"}  # type: ignore[attr-defined]
    anymail = mail.EmailMessage("s", "b", "app@example.com", ["dan@example.org"])
    anymail.envelope_sender = "verp+dan@example.com"  # type: ignore[attr-defined]
    options = mail.EmailMessage("s", "b", "app@example.com", ["eve@example.org"])
    options.provider_options = {"primary": {"name": "other.test"}}  # type: ignore[attr-defined]
    assert mail.get_connection().send_messages([explicit, anymail, options]) == 3
    received(server, 4)
    senders = {e.rcpt_tos[0]: e.mail_from for e in server.state.messages[1:]}
    assert senders == {
        "cat@example.org": "verp+cat@example.com",
        "dan@example.org": "verp+dan@example.com",
        "eve@example.org": "app@example.com",
    }
    assert "EHLO other.test" in server.state.commands  # the one-off connection's options


def test_enqueue_on_commit(
    smtp_server: Servers, use_mailer: UseMailer, database: None, tmp_path: Path
) -> None:
    import anyio
    from django.db import transaction

    from mailer import Mailer

    server = smtp_server()
    outbox = f"sqlite:///{tmp_path}/outbox.db"  # four slashes: an absolute path
    use_mailer(smtp_config(server, outbox=outbox, django={"enqueue_on_commit": True}))

    rolled_back = mail.EmailMessage("rolled back", "b", "a@example.com", ["r@example.org"])

    def failing_view() -> None:
        with transaction.atomic():
            assert rolled_back.send() == 1
            assert not hasattr(rolled_back, "mailer_result")  # not before the commit
            raise RuntimeError("the view failed: the transaction rolls back")

    with pytest.raises(RuntimeError):
        failing_view()
    assert not hasattr(rolled_back, "mailer_result")  # never enqueued

    committed = mail.EmailMessage("committed", "b", "a@example.com", ["r@example.org"])
    with transaction.atomic():
        assert committed.send() == 1
        assert not hasattr(committed, "mailer_result")
    result = committed.mailer_result  # type: ignore[attr-defined]
    assert result.queued and result.status == "queued" and not result.sent
    assert server.state.messages == []  # the request only stored it

    routed = mail.EmailMessage("routed", "b", "a@example.com", ["r@example.org"])
    routed.providers = ["primary"]  # type: ignore[attr-defined]
    with pytest.raises(MessageError, match="enqueue_on_commit"):
        routed.send()

    async def worker() -> list[dict[str, int]]:
        config = smtp_config(server, outbox=outbox)
        async with Mailer.from_config(config) as mailer:
            return [await mailer.drain(), await mailer.drain()]

    first, second = anyio.run(worker)
    assert first.get("sent") == 1 and not second.get("sent")
    (msg,) = received(server)
    assert msg["Subject"] == "committed"
    assert msg["Message-ID"] == result.message_id
    time.sleep(0.2)
    assert len(server.state.messages) == 1  # delivered once


def test_enqueue_on_commit_needs_an_outbox(smtp_server: Servers, use_mailer: UseMailer) -> None:
    use_mailer(smtp_config(smtp_server(), django={"enqueue_on_commit": True}))
    with pytest.raises(ConfigError, match="needs an outbox"):
        mail.send_mail("s", "b", "a@example.com", ["r@example.org"])


@pytest.fixture
def pg_alias(pg_url: str) -> Any:
    """A Django database alias ``pg`` on this test's own Postgres database."""
    from urllib.parse import urlsplit

    from django.db import connections

    url = urlsplit(pg_url)
    entry = {"ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
             "USER": url.username, "HOST": url.hostname, "PORT": str(url.port)}  # fmt: skip
    default = connections.settings["default"]
    configured = connections.configure_settings({"default": default, "pg": entry})
    connections.settings["pg"] = configured["pg"]
    try:
        yield "pg"
    finally:
        connections["pg"].close()
        del connections.settings["pg"]
        if hasattr(connections._connections, "pg"):
            delattr(connections._connections, "pg")


def outbox_rows(pg_url: str) -> list[tuple[Any, ...]]:
    """The outbox's rows as another connection sees them (committed ones only)."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return list(conn.execute("SELECT message_id, state FROM mailer_outbox ORDER BY id"))


def test_enqueue_in_transaction_is_atomic_with_the_apps_data(
    smtp_server: Servers, use_mailer: UseMailer, pg_url: str, pg_alias: str
) -> None:
    """The outbox row is written through Django's connection, inside the app's
    transaction: no commit of the app's data without its mail, and no mail without it."""
    import anyio
    from django.db import connections, transaction

    from mailer import Mailer

    server = smtp_server()
    config = smtp_config(server, outbox=pg_url)
    use_mailer({**config, "django": {"enqueue_in_transaction": pg_alias}})
    with connections[pg_alias].cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text)")

    def orders() -> int:
        with connections[pg_alias].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM orders")
            return int(cursor.fetchone()[0])

    def place_order(item: str, fail: bool = False) -> Any:
        with transaction.atomic(using=pg_alias):
            with connections[pg_alias].cursor() as cursor:
                cursor.execute("INSERT INTO orders (item) VALUES (%s)", [item])
            confirmation = mail.EmailMessage(item, "b", "a@example.com", ["r@example.org"])
            assert confirmation.send() == 1
            assert outbox_rows(pg_url) == []  # not visible before the commit
            if fail:
                raise RuntimeError("the view failed: the transaction rolls back")
        return confirmation

    with pytest.raises(RuntimeError):
        place_order("rolled back", fail=True)
    assert orders() == 0 and outbox_rows(pg_url) == []  # neither the order nor its mail

    confirmation = place_order("committed")
    result = confirmation.mailer_result
    assert result.queued and result.status == "queued"
    assert orders() == 1
    assert outbox_rows(pg_url) == [(result.message_id, "queued")]
    assert server.state.messages == []  # the request only stored it

    async def worker() -> list[dict[str, int]]:
        async with Mailer.from_config(config) as mailer:
            return [await mailer.drain(), await mailer.drain()]

    first, second = anyio.run(worker)
    assert first.get("sent") == 1 and not second.get("sent")
    (msg,) = received(server)
    assert msg["Subject"] == "committed" and msg["Message-ID"] == result.message_id
    time.sleep(0.2)
    assert len(server.state.messages) == 1  # delivered once


def test_enqueue_in_transaction_stores_a_large_attachment_in_chunks(
    smtp_server: Servers, use_mailer: UseMailer, pg_url: str, pg_alias: str
) -> None:
    """A message with a 2 MiB attachment: its row and chunks are written through
    Django's connection in the app's transaction (none before the commit), and the
    worker sends the attachment's bytes."""
    import os

    import anyio
    import psycopg
    from django.db import transaction

    from mailer import Mailer

    server = smtp_server()
    config = smtp_config(server, outbox=pg_url)
    use_mailer({**config, "django": {"enqueue_in_transaction": pg_alias}})
    data = os.urandom(2 * 1024 * 1024)

    def chunks() -> int:
        with psycopg.connect(pg_url) as conn:
            found = conn.execute("SELECT count(*) FROM mailer_outbox_chunk").fetchone()
            return int(found[0]) if found else 0

    async def open_outbox() -> None:  # its tables, as a worker would have made them
        async with Mailer.from_config(config) as mailer:
            await mailer.outbox.stats()

    anyio.run(open_outbox)
    with transaction.atomic(using=pg_alias):
        confirmation = mail.EmailMessage("large", "b", "a@example.com", ["r@example.org"])
        confirmation.attach("data.bin", data, "application/octet-stream")
        assert confirmation.send() == 1
        assert outbox_rows(pg_url) == [] and chunks() == 0  # not visible before the commit
    assert chunks() == 2

    async def worker() -> dict[str, int]:
        async with Mailer.from_config(config) as mailer:
            return await mailer.drain()

    assert anyio.run(worker).get("sent") == 1
    (msg,) = received(server)
    (part,) = [p for p in msg.walk() if p.get_filename() == "data.bin"]
    assert part.get_payload(decode=True) == data


def test_enqueue_in_transaction_refuses_a_database_that_is_not_the_outboxs(
    smtp_server: Servers, use_mailer: UseMailer, pg_url: str, pg_alias: str, tmp_path: Path
) -> None:
    other = pg_url.rsplit("/", 1)[0] + "/postgres"  # same server, another database
    config = smtp_config(smtp_server(), outbox=other)
    use_mailer({**config, "django": {"enqueue_in_transaction": pg_alias}})
    with pytest.raises(ConfigError, match="is not the outbox's"):
        mail.send_mail("s", "b", "a@example.com", ["r@example.org"])

    sqlite = smtp_config(smtp_server(), outbox=f"sqlite:///{tmp_path}/o.db")
    use_mailer({**sqlite, "django": {"enqueue_in_transaction": True}})
    with pytest.raises(ConfigError, match="needs a postgresql:// outbox"):
        mail.send_mail("s", "b", "a@example.com", ["r@example.org"])
