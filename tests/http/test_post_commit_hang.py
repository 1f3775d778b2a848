"""An HTTP API that takes the request body and never answers (issue 21, item 19): the
first send ends DeliveryUncertain, and the breaker opens on that first post-commit
timeout (a slow call), so the next sends go to the backup at once instead of each waiting
the timeout (twice: Resend's idempotent retry). Resend's real adapter against the kit's
FakeResend on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from mailer import DeliveryUncertain, Mailer, Message
from mailer.testing import FakeResend, SMTPSink

pytestmark = pytest.mark.anyio


def _message(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


async def test_a_hang_after_the_body_opens_the_breaker_at_once() -> None:
    async with FakeResend("hang") as api, SMTPSink(name="backup") as sink:
        config = {
            "providers": [
                {"type": "resend", "name": "primary", "config": api.config(timeout=1.0)},
                f"smtp://127.0.0.1:{sink.port}?name=backup",
            ]
        }  # default retry, health and on_uncertain ("raise")
        async with Mailer.from_config(config) as mailer:
            started = time.monotonic()
            with pytest.raises(DeliveryUncertain) as info:
                await mailer.send(_message(0))
            took = time.monotonic() - started
            # the timeout, and its idempotent retry's (safe: same key), then no more
            assert took < 3.5, took
            assert {a.provider for a in info.value.attempts} == {"primary"}
            tried = api.requests
            assert 1 <= tried <= 2
            assert mailer.health()["primary"]["state"] == "open"
            for i in range(1, 4):
                started = time.monotonic()
                result = await mailer.send(_message(i))
                assert result.provider == "backup"
                assert time.monotonic() - started < 0.5
                assert [a.provider for a in result.attempts] == ["backup"]
        assert api.requests == tried  # the open breaker kept every later send away
