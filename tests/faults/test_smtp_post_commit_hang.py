"""An SMTP server that takes the message and never answers the final "." (issue 21):
the send that meets it ends DeliveryUncertain (the server may have queued it), and that
timeout is a slow call, as HTTP's post-body timeout is: the breaker opens on the first,
so the next sends go to the backup at once instead of each waiting ``socket_timeout``.
A dropped connection after the "." is not a hang: it is counted as before (threshold).

The kit's SMTPTestServer acts out the hang (``DATA_END`` fault); every routing setting
is the default, only ``socket_timeout`` is short (the default, 30 s, is the wait itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mailer import DeliveryUncertain, Mailer, Message
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SOCKET_TIMEOUT = 1.0


def _message(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


@pytest.mark.parametrize("fault", ["hang", "queue-hang"])
@pytest.mark.parametrize("pool", [True, False])
async def test_a_hang_after_the_final_dot_opens_the_breaker_at_once(
    smtp: Callable[..., SMTPTestServer], fault: str, pool: bool
) -> None:
    hung, backup_server = smtp(), smtp()
    hung.state.fail("DATA_END", fault, times=1000)
    primary = SMTPProvider.from_config(
        "primary", hung.config(socket_timeout=SOCKET_TIMEOUT, pool=pool)
    )
    backup = SMTPProvider.from_config("backup", backup_server.config(pool=pool))
    async with Mailer([primary, backup]) as mailer:  # default retry, health, on_uncertain
        started = time.monotonic()
        with pytest.raises(DeliveryUncertain) as info:
            await mailer.send(_message(0))
        took = time.monotonic() - started
        assert SOCKET_TIMEOUT * 0.9 <= took < SOCKET_TIMEOUT + 1.5, took
        # one try: a send after the "." is never repeated on a non-idempotent provider
        assert [(a.provider, a.committed) for a in info.value.attempts] == [("primary", True)]
        assert info.value.timed_out
        assert mailer.health()["primary"]["state"] == "open"
        for i in range(1, 4):
            started = time.monotonic()
            result = await mailer.send(_message(i))
            assert result.provider == "backup"
            assert [a.provider for a in result.attempts] == ["backup"]
            assert time.monotonic() - started < 0.5
    assert hung.state.verbs().count("MAIL") == 1  # the open breaker kept the rest away
    # the message that met the hang: queued by the server (queue-hang) or not at all
    assert len(hung.received()) == (1 if fault == "queue-hang" else 0)


async def test_a_dropped_connection_after_the_final_dot_is_not_a_slow_call(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    dropped, backup_server = smtp(), smtp()
    dropped.state.fail("DATA_END", "drop", times=1)
    primary = SMTPProvider.from_config("primary", dropped.config(socket_timeout=SOCKET_TIMEOUT))
    backup = SMTPProvider.from_config("backup", backup_server.config())
    async with Mailer([primary, backup]) as mailer:
        with pytest.raises(DeliveryUncertain) as info:
            await mailer.send(_message(0))
        assert not info.value.timed_out
        # one failure of the three it takes (health.failure_threshold): still closed
        assert mailer.health()["primary"]["state"] == "closed"
        assert (await mailer.send(_message(1))).provider == "primary"
