"""When every provider fails, nothing is lost: with ``on_all_failed="enqueue"`` the
message goes into the durable outbox and is delivered once, later, recognisably the same
message (same Message-ID, same recipients). With the default ("raise"), the error still
holds the message whole. (The outbox itself is tested in tests/outbox/.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import AllProvidersFailed, Mailer, Message, TransientError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer, closed_port

pytestmark = pytest.mark.anyio


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], cc=["c@example.org"],
                   subject="Reset", text="t", html="<p>h</p>", headers={"X-Ref": "42"},
                   attachments=[{"filename": "a.txt", "content": b"data"}])  # fmt: skip


async def test_all_failed_raises_with_the_message_by_default() -> None:
    down = [SMTPProvider.from_config(n, {"host": "127.0.0.1", "port": closed_port()})
            for n in ("primary", "backup")]  # fmt: skip
    sent = message()
    async with Mailer(down, retry={"attempts": 1}) as mailer:
        with pytest.raises(AllProvidersFailed) as info:
            await mailer.send(sent)
    exc = info.value
    assert set(exc.errors) == {"primary", "backup"}
    assert all(isinstance(e, TransientError) for e in exc.errors.values())
    assert not exc.possibly_delivered  # nothing crossed a commit point
    assert exc.message is not None and exc.message.message_id == sent.message_id


async def test_all_failed_is_queued_then_delivered_once(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    port = closed_port()  # refused until smtp(port=) serves it
    config = {
        "providers": [{"type": "smtp", "name": "primary",
                       "config": {"host": "127.0.0.1", "port": port}}],
        "retry": {"attempts": 1},
        "outbox": {"url": f"sqlite:///{tmp_path / 'outbox.db'}",
                   "backoff": {"initial": 0.05, "jitter": 0}},
        "on_all_failed": "enqueue",
    }  # fmt: skip
    sent = message()
    async with Mailer.from_config(config) as mailer:
        result = await mailer.send(sent)
        assert result.status == "queued" and result.message_id == sent.message_id
        server = smtp(port=port)  # the provider comes back
        assert await mailer.drain(timeout=30) == {"sent": 1}
    assert server.received() == {sent.message_id: 1}
    assert server.recipients()[str(sent.message_id)] == ["u@example.org", "c@example.org"]
