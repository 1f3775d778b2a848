"""One wording per outcome in the delivery log (issue 21, item 21): a send that may have
been delivered is never logged as "not sent", against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest

from mailer import AllProvidersFailed, Mailer, Message
from mailer.testing import SMTPTestServer, closed_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(None, auth=False) as started:
        yield started


def _message() -> Message:
    return Message(sender="app@example.com", to=["ann@example.org"], subject="s", text="t")


def _failed(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mailer.delivery" and getattr(r, "event", None) == "failed"]  # fmt: skip


async def test_cancelled_after_the_commit_point_is_not_logged_as_not_sent(
    server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer")
    server.state.fail("DATA_END", "delay:5")  # the message is in; the reply is late
    message = _message()
    async with Mailer.from_config(
        {"providers": [{"type": "smtp", "config": server.config()}]}
    ) as mailer:
        with anyio.move_on_after(1.0):
            await mailer.send(message)
    (line,) = _failed(caplog)
    assert line.startswith(f"may have been delivered {message.message_id}: "), line
    assert "not sent" not in line


async def test_refused_everywhere_is_logged_as_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailer")
    message = _message()
    config = {"retry": {"attempts": 1},
              "providers": [f"smtp://127.0.0.1:{closed_port()}"]}  # fmt: skip
    async with Mailer.from_config(config) as mailer:
        with pytest.raises(AllProvidersFailed):
            await mailer.send(message)
    (line,) = _failed(caplog)
    assert line.startswith(f"not sent {message.message_id}: "), line
    assert "may have been delivered" not in line
