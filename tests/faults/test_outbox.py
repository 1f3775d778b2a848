"""When every provider fails, the message is kept whole: store it, retry it later, and
it is delivered once, recognisably the same message (same Message-ID)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from mailer import AllProvidersFailed, Mailer, Message, TransientError
from mailer.providers.smtp import SMTPProvider

from .kit import FaultServer, free_port

pytestmark = pytest.mark.anyio


async def test_outbox_round_trip(smtp: Callable[..., FaultServer]) -> None:
    down = [SMTPProvider.from_config(n, {"host": "127.0.0.1", "port": free_port()})
            for n in ("primary", "backup")]  # fmt: skip
    message = Message(sender="app@example.com", to=["u@example.org"], cc=["c@example.org"],
                      subject="Reset", text="t", html="<p>h</p>", headers={"X-Ref": "42"},
                      attachments=[{"filename": "a.txt", "content": b"data"}])  # fmt: skip
    outbox: list[str] = []
    async with Mailer(down, retry={"attempts": 1}) as mailer:
        with pytest.raises(AllProvidersFailed) as info:
            await mailer.send(message)
    exc = info.value
    assert set(exc.errors) == {"primary", "backup"}
    assert all(isinstance(e, TransientError) for e in exc.errors.values())
    assert not exc.possibly_delivered  # safe to retry as-is
    assert exc.message is not None
    outbox.append(exc.message.model_dump_json())  # what the app stores
    assert len(outbox) == 1
    server = smtp()
    later = Message.model_validate_json(outbox[0])
    assert later.message_id == message.message_id
    async with Mailer([SMTPProvider.from_config("primary", server.config())]) as mailer:
        result = await mailer.send(later)
    await anyio.sleep(0.05)
    assert result.message_id == message.message_id
    assert server.received() == {message.message_id: 1}
    assert server.recipients()[str(message.message_id)] == ["u@example.org", "c@example.org"]
