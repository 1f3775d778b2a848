"""Outcomes of a send, classified from what real servers do."""

from __future__ import annotations

import time

import pytest
from tests.smtp.network import running

from mailer import Mailer, Message
from mailer._attempt import AttemptContext
from mailer._errors import (
    AuthError,
    DeliveryUncertain,
    PermanentError,
    RecipientsDeferred,
    RecipientsRefused,
    TransientError,
)
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.wire import encode_data
from mailer.testing import ScriptedServer, SMTPTestServer, closed_port

from .kit import SMUGGLING

pytestmark = pytest.mark.anyio


def message(*to: str) -> Message:
    return Message(
        sender="app@example.com", to=list(to or ["u@example.org"]), subject="Hi", text="x"
    )


async def test_connection_refused() -> None:
    port = closed_port()
    provider = SMTPProvider.from_config("p", {"host": "127.0.0.1", "port": port})
    with pytest.raises(TransientError) as info:
        await provider.send(message())
    assert str(info.value) == (
        f"[p] connection refused by 127.0.0.1:{port}: is the server up, and is this the right port?"
    )


async def test_421_greeting() -> None:
    busy = ScriptedServer(["421 4.3.2 too busy, try later"])
    with running(busy):
        provider = SMTPProvider.from_config("p", {"host": "127.0.0.1", "port": busy.port})
        with pytest.raises(TransientError) as info:
            await provider.send(message())
    assert (info.value.code, info.value.response) == (421, "4.3.2 too busy, try later")


async def test_drop_after_data_is_uncertain(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("DATA_END", "drop")
    with pytest.raises(DeliveryUncertain) as info:
        await SMTPProvider.from_config("p", plain_server.config()).send(message())
    assert "lost after the message was sent (final '.')" in str(info.value)


async def test_no_reply_after_data_is_uncertain(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("DATA_END", "hang")
    config = plain_server.config(socket_timeout=0.4)
    started = time.monotonic()
    with pytest.raises(DeliveryUncertain, match=r"no reply within 0.4s \(socket_timeout\)"):
        await SMTPProvider.from_config("p", config).send(message())
    assert time.monotonic() - started < 2


async def test_drop_before_data_is_transient(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("DATA", "drop")
    with pytest.raises(TransientError, match="lost at DATA"):
        await SMTPProvider.from_config("p", plain_server.config()).send(message())


async def test_some_recipients_refused(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("RCPT", "550 5.1.1 <bad@example.org>: no such user", match="bad@")
    result = await SMTPProvider.from_config("p", plain_server.config()).send(
        message("a@example.org", "bad@example.org", "c@example.org")
    )
    assert result.accepted == ["a@example.org", "c@example.org"]
    assert result.rejected == {"bad@example.org": "550 5.1.1 <bad@example.org>: no such user"}
    assert plain_server.state.messages[0].rcpt_tos == ["a@example.org", "c@example.org"]


async def test_all_recipients_refused(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("RCPT", "550 5.1.1 no such user")
    with pytest.raises(RecipientsRefused) as info:
        await SMTPProvider.from_config("p", plain_server.config()).send(
            message("a@example.org", "b@example.org")
        )
    assert set(info.value.refused) == {"a@example.org", "b@example.org"}
    assert "DATA" not in plain_server.state.verbs()


@pytest.mark.parametrize(
    ("command", "reply", "kind"),
    [
        ("MAIL", "451 4.3.0 try again later", TransientError),
        ("MAIL", "553 5.1.8 sender domain does not exist", PermanentError),
        ("RCPT", "452 4.2.2 mailbox full", RecipientsDeferred),
        ("DATA", "554 5.5.1 no valid recipients", PermanentError),
        ("DATA_END", "451 4.7.1 greylisted", TransientError),
        ("DATA_END", "554 5.7.1 message rejected as spam", PermanentError),
        ("EHLO", "421 4.3.2 shutting down", TransientError),
    ],
)
async def test_reply_classification_end_to_end(
    plain_server: SMTPTestServer, command: str, reply: str, kind: type
) -> None:
    plain_server.state.fail(command, reply)
    with pytest.raises(kind) as info:
        await SMTPProvider.from_config("p", plain_server.config()).send(message())
    assert type(info.value) is kind
    assert info.value.code == int(reply[:3])
    assert info.value.response == reply[4:]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_authentication_required(smtp_server: object) -> None:
    server = smtp_server(auth_required=True)  # type: ignore[operator]
    with pytest.raises(AuthError, match="requires authentication at MAIL FROM") as info:
        await SMTPProvider.from_config("p", server.config()).send(message())
    assert info.value.code == 530


@pytest.mark.parametrize("payload", SMUGGLING)
async def test_smuggling_sequences_never_end_the_data(
    plain_server: SMTPTestServer, payload: bytes
) -> None:
    provider = SMTPProvider.from_config("p", plain_server.config())
    conn = await provider.connect()
    try:
        await conn.transaction("app@example.com", ["u@example.org"], encode_data(payload))
    finally:
        await conn.quit()
    assert plain_server.wait_for(lambda: "QUIT" in plain_server.state.verbs())
    assert len(plain_server.state.messages) == 1
    assert plain_server.state.verbs().count("MAIL") == 1  # evil MAIL stayed inside DATA
    assert b"MAIL FROM:<evil@x>" in plain_server.state.messages[0].original_content


async def test_send_deadline_shortens_timeouts(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("RCPT", "hang")
    provider = SMTPProvider.from_config("p", plain_server.config(socket_timeout=30))
    token = AttemptContext("p", deadline=time.monotonic() + 0.5).enter()
    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="cut short by the send deadline"):
            await provider.send(message())
    finally:
        AttemptContext.exit(token)
    assert time.monotonic() - started < 2


async def test_through_the_mailer_with_a_dsn(plain_server: SMTPTestServer) -> None:
    dsn = (
        f"smtp://127.0.0.1:{plain_server.port}?ehlo_name=client.test&pool=true"
        "&max_connections=2&name=primary"
    )
    mailer = Mailer.from_config({"providers": [dsn]})
    async with mailer:
        result = await mailer.send(message())
    assert result.provider == "primary"
    assert result.accepted == ["u@example.org"]
    assert plain_server.state.commands[0] == "EHLO client.test"
