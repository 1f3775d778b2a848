"""Per-message control against real local servers: the envelope, provider options."""

from __future__ import annotations

from typing import Any

import pytest

from mailer import Mailer, Message, MessageError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import ScriptedProvider, SMTPTestServer

pytestmark = pytest.mark.anyio


def provider(server: SMTPTestServer, name: str = "smtp", **overrides: Any) -> SMTPProvider:
    return SMTPProvider.from_config(name, server.config(**overrides))


async def test_envelope_differs_from_the_headers(plain_server: SMTPTestServer) -> None:
    message = Message(
        sender="App <app@example.com>",
        to=["visible@example.org"],
        subject="VERP",
        text="hi",
        envelope={"from": "bounce+u1@example.com", "to": ["real@example.org"]},
    )
    async with Mailer([provider(plain_server)]) as mailer:
        result = await mailer.send(message)
    assert result.accepted == ["real@example.org"]
    envelope = plain_server.state.messages[-1]
    assert envelope.mail_from == "bounce+u1@example.com"
    assert envelope.rcpt_tos == ["real@example.org"]
    assert b"To: visible@example.org" in envelope.original_content


async def test_provider_options_use_a_one_off_connection(plain_server: SMTPTestServer) -> None:
    p = provider(plain_server, pool=True)
    message = Message(
        sender="app@example.com",
        to=["u@example.org"],
        text="x",
        provider_options={"smtp": {"name": "other.test"}},
    )
    async with Mailer([p]) as mailer:
        await mailer.send(Message(sender="app@example.com", to=["u@example.org"], text="y"))
        opened = p.pool.opened if p.pool else 0
        await mailer.send(message)
        assert p.pool is not None and p.pool.opened == opened  # the pool was not used
    ehlos = [c for c in plain_server.state.commands if c.startswith("EHLO")]
    assert ehlos[-1] == "EHLO other.test" and "EHLO client.test" in ehlos


async def test_bad_smtp_options_are_refused_before_any_io(plain_server: SMTPTestServer) -> None:
    other = ScriptedProvider("first")
    message = Message(
        sender="app@example.com",
        to=["u@example.org"],
        text="x",
        provider_options={"smtp": {"no_such_option": 1}},
    )
    async with Mailer([other, provider(plain_server)]) as mailer:
        with pytest.raises(MessageError, match="no_such_option"):
            await mailer.send(message)
    assert other.calls == 0  # nothing was tried, not even the first provider


async def test_options_for_providers_not_in_the_mailer_are_ignored(
    plain_server: SMTPTestServer,
) -> None:
    message = Message(
        sender="app@example.com",
        to=["u@example.org"],
        text="x",
        provider_options={"postmark": {"MessageStream": "outbound"}},
    )
    async with Mailer([provider(plain_server)]) as mailer:
        assert (await mailer.send(message)).provider == "smtp"
