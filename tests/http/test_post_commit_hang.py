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

TIMEOUT = 1.0  # the provider's: a try and its retries share it
#: what a send may take beyond it on this shared, noisy machine
SLACK = 0.6


def _message(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


async def test_a_hang_after_the_body_opens_the_breaker_at_once() -> None:
    async with FakeResend("hang") as api, SMTPSink(name="backup") as sink:
        config = {
            "providers": [
                {"type": "resend", "name": "primary", "config": api.config(timeout=TIMEOUT)},
                f"smtp://127.0.0.1:{sink.port}?name=backup",
            ]
        }  # default retry, health and on_uncertain ("raise")
        async with Mailer.from_config(config) as mailer:
            started = time.monotonic()
            with pytest.raises(DeliveryUncertain) as info:
                await mailer.send(_message(0))
            took = time.monotonic() - started
            # the try and its idempotent retry (safe: same key) share the provider's
            # timeout, 1 s: half each, then no more (it was 2 s and more: one each)
            assert TIMEOUT * 0.9 <= took < TIMEOUT + SLACK, took
            assert [a.provider for a in info.value.attempts] == ["primary", "primary"]
            tried = api.requests
            assert tried == 2
            assert mailer.health()["primary"]["state"] == "open"
            for i in range(1, 4):
                started = time.monotonic()
                result = await mailer.send(_message(i))
                assert result.provider == "backup"
                assert time.monotonic() - started < 0.5
                assert [a.provider for a in result.attempts] == ["backup"]
        assert api.requests == tried  # the open breaker kept every later send away


async def test_the_retry_delivers_when_the_hang_passes_within_the_timeout() -> None:
    """One request hangs, the next is answered: the idempotent retry gets the half of
    the timeout kept for it, and delivers (once: the same key)."""
    async with FakeResend(script=["accept-hang"]) as api, SMTPSink(name="backup") as sink:
        config = {
            "providers": [
                {"type": "resend", "name": "primary", "config": api.config(timeout=TIMEOUT)},
                f"smtp://127.0.0.1:{sink.port}?name=backup",
            ]
        }
        async with Mailer.from_config(config) as mailer:
            message = _message(0)
            started = time.monotonic()
            result = await mailer.send(message)
            took = time.monotonic() - started
            assert result.provider == "primary"
            assert [a.outcome for a in result.attempts] == ["DeliveryUncertain", "sent"]
            assert TIMEOUT / 2 * 0.9 <= took < TIMEOUT, took
            assert mailer.health()["primary"]["state"] == "closed"
        assert api.requests == 2
        assert api.received[str(message.message_id)] == 1  # the replay delivered nothing new
        assert not sink.received
