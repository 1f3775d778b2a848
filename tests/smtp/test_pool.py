"""The connection pool, counted from the server's side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mailer import Message
from mailer._errors import RecipientsRefused, TransientError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer

pytestmark = pytest.mark.anyio


def message(n: int = 0, to: str | None = None) -> Message:
    return Message(
        sender="app@example.com", to=[to or f"u{n}@example.org"], subject=f"m{n}", text="x"
    )


async def test_never_above_max_connections_and_lazy(starttls_server: SMTPTestServer) -> None:
    config = starttls_server.config(pool=True, max_connections=3)
    async with SMTPProvider.from_config("p", config) as provider:
        assert starttls_server.state.connections == 0  # nothing opened before a send
        await asyncio.wait_for(asyncio.gather(*(provider.send(message(i)) for i in range(30))), 20)
        assert provider.pool is not None and provider.pool.opened == 3
    assert starttls_server.state.peak == 3
    assert starttls_server.state.connections == 3
    assert len(starttls_server.state.messages) == 30


async def test_recycled_after_max_messages(plain_server: SMTPTestServer) -> None:
    config = plain_server.config(pool=True, max_connections=1, max_messages=3)
    async with SMTPProvider.from_config("p", config) as provider:
        for i in range(7):
            await provider.send(message(i))
        assert plain_server.wait_for(lambda: plain_server.state.verbs().count("QUIT") == 2)
    assert plain_server.state.connections == 3  # 3 + 3 + 1
    assert plain_server.wait_for(lambda: plain_server.state.verbs().count("QUIT") == 3)
    assert plain_server.state.verbs().count("MAIL") == 7


async def test_transparent_reconnect_after_server_idle_timeout(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server(idle_timeout=0.3)
    server.state.fail("IDLE", "421 4.4.2 idle timeout, closing")
    async with SMTPProvider.from_config("p", server.config(pool=True)) as provider:
        await provider.send(message(1))
        assert server.wait_for(lambda: server.state.current == 0)  # server hung up
        result = await provider.send(message(2))
    assert result.accepted == ["u2@example.org"]
    assert server.state.connections == 2
    assert len(server.state.messages) == 2


async def test_reused_connection_failing_at_mail_is_replaced_once(
    plain_server: SMTPTestServer,
) -> None:
    async with SMTPProvider.from_config("p", plain_server.config(pool=True)) as provider:
        await provider.send(message(1))
        # The server goes away as the next MAIL arrives (it looked alive while idle).
        plain_server.state.fail("MAIL", "421 4.3.2 shutting down", times=1)
        result = await provider.send(message(2))
    assert result.accepted == ["u2@example.org"]
    assert plain_server.state.verbs().count("MAIL") == 3
    assert plain_server.state.connections == 2
    assert len(plain_server.state.messages) == 2


async def test_fresh_connection_failing_at_mail_is_not_retried(
    plain_server: SMTPTestServer,
) -> None:
    plain_server.state.fail("MAIL", "421 4.3.2 shutting down")
    provider = SMTPProvider.from_config("p", plain_server.config(pool=True))
    with pytest.raises(TransientError) as info:
        await provider.send(message())
    assert info.value.code == 421
    assert plain_server.state.verbs().count("MAIL") == 1
    await provider.aclose()


async def test_connection_in_doubt_is_discarded(plain_server: SMTPTestServer) -> None:
    plain_server.state.fail("RCPT", "hang", times=1)
    config = plain_server.config(pool=True, socket_timeout=0.4)
    async with SMTPProvider.from_config("p", config) as provider:
        with pytest.raises(TransientError, match=r"timed out after 0.4s .* RCPT TO"):
            await provider.send(message(1))
        result = await provider.send(message(2))
    assert result.accepted == ["u2@example.org"]
    assert plain_server.state.connections == 2  # the hung one was never reused
    assert len(plain_server.state.messages) == 1


async def test_rset_after_failed_transaction_and_connection_kept(
    plain_server: SMTPTestServer,
) -> None:
    plain_server.state.fail("RCPT", "550 5.1.1 no such user", match="nobody@")
    async with SMTPProvider.from_config("p", plain_server.config(pool=True)) as provider:
        with pytest.raises(RecipientsRefused) as info:
            await provider.send(message(to="nobody@example.org"))
        assert info.value.refused == {"nobody@example.org": "550 5.1.1 no such user"}
        await provider.send(message(2))
    verbs = plain_server.state.verbs()
    assert verbs[: verbs.index("RSET") + 2] == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL"]
    assert plain_server.state.connections == 1


async def test_aclose_closes_every_connection(starttls_server: SMTPTestServer) -> None:
    provider = SMTPProvider.from_config("p", starttls_server.config(pool=True, max_connections=4))
    await asyncio.gather(*(provider.send(message(i)) for i in range(8)))
    assert starttls_server.state.current >= 1
    await provider.aclose()
    assert starttls_server.wait_for(lambda: starttls_server.state.current == 0)
    assert starttls_server.state.verbs().count("QUIT") == starttls_server.state.connections
    await provider.aclose()  # twice is fine
    await provider.send(message(9))  # and a closed provider can open a new pool
    await provider.aclose()


async def test_not_pooled_is_one_connection_per_send(plain_server: SMTPTestServer) -> None:
    provider = SMTPProvider.from_config("p", plain_server.config())
    for i in range(3):
        await provider.send(message(i))
    assert plain_server.state.connections == 3
    assert plain_server.wait_for(lambda: plain_server.state.verbs().count("QUIT") == 3)
    assert provider.pool is None
