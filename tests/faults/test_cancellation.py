"""A send cancelled at any SMTP phase leaves the pool clean and is reported by its
commit point.

The caller's own timeout (anyio.fail_after) or a cancelled task group stops a send while
the server sits on one command. Afterwards: no connection in doubt is reused (a late
reply would be read as the answer to the next command), the next sends all work, each
delivered once to exactly its recipients, and listeners saw the cancelled attempt as
"not sent" (TransientError) before the commit point (the end of the data) and as
DeliveryUncertain after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from mailer import AllProvidersFailed, DeliveryUncertain, Mailer, TransientError
from mailer._mailer import Event
from mailer.providers._smtp import SMTPProvider
from mailer.testing import Fault, SMTPTestServer, eventually

from .kit import check_ledger, messages, run_load

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

PHASES = ["EHLO", "MAIL", "RCPT", "DATA", "DATA_END"]


def provider(server: SMTPTestServer, **overrides: Any) -> SMTPProvider:
    config = server.config(pool=True, max_connections=2, socket_timeout=5.0, **overrides)
    return SMTPProvider.from_config("a", config)


async def cancel_one(mailer: Mailer, how: str, hang: Fault) -> None:
    """Send one message and cancel it once the server sits on the command ``hang`` fires
    on (an event: after a guessed 0.3 s a loaded machine's send could still be short of
    that phase, cancelled at an earlier one, and the hang left for a later send)."""
    message = messages(1)[0]

    async def when_hung(cancel: Callable[[], None]) -> None:
        assert await eventually(lambda: hang.fired, timeout=10, interval=0.005)
        cancel()

    async def under_own_timeout() -> None:
        with anyio.fail_after(20) as scope:

            def expire() -> None:  # the caller's own timeout runs out now
                scope.deadline = anyio.current_time()

            async with anyio.create_task_group() as tg:
                tg.start_soon(when_hung, expire)
                await mailer.send(message)

    if how == "fail_after":
        with pytest.raises(TimeoutError):
            await under_own_timeout()
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mailer.send, message)
            await when_hung(tg.cancel_scope.cancel)


@pytest.mark.parametrize("how", ["fail_after", "task_group"])
@pytest.mark.parametrize("phase", PHASES)
async def test_cancelled_at_each_phase(
    smtp: Callable[..., SMTPTestServer], phase: str, how: str
) -> None:
    server = smtp()
    p = provider(server)
    mailer = Mailer([p], send_timeout=10)
    events: list[Event] = []
    mailer.subscribe(events.append)
    warm = messages(1)[0]
    async with mailer:
        if phase != "EHLO":
            await mailer.send(warm)  # a pooled connection to reuse
        hang = server.state.fail(phase, "hang", times=1)
        await cancel_one(mailer, how, hang)
        cancelled = [e for e in events if e.kind == "attempt" and e.error is not None]
        assert len(cancelled) == 1
        committed = phase == "DATA_END"
        assert isinstance(cancelled[0].error, DeliveryUncertain if committed else TransientError)
        assert cancelled[0].attempt is not None
        assert cancelled[0].attempt.committed is committed
        assert "cancelled" in str(cancelled[0].error)
        assert p.pool is not None
        assert all(c.usable for c in p.pool._idle)  # nothing in doubt is kept
        assert p.pool.size <= 2
        after = await run_load(mailer, messages(30), concurrency=4, timeout=10)
    await anyio.sleep(0.05)
    received = server.received()
    assert received.pop(str(warm.message_id), 0) == (phase != "EHLO")
    summary = check_ledger(after, {"a": received}, {"a": server.recipients()})
    assert summary.sent == {"a": 30}
    assert mailer.health()["a"]["state"] == "closed"  # a cancellation is no verdict


@pytest.mark.parametrize(("phase", "kind"), [("RCPT", TransientError),
                                             ("DATA_END", DeliveryUncertain)])  # fmt: skip
async def test_send_timeout_at_a_phase(
    smtp: Callable[..., SMTPTestServer], phase: str, kind: type[Exception]
) -> None:
    # The Mailer's own deadline cuts the provider's timeouts short: before the final "."
    # that is a plain failure (nothing sent, fail over); after it, uncertain.
    server, spare = smtp(), smtp()
    server.state.fail(phase, "hang", times=1)
    p2 = SMTPProvider.from_config("b", spare.config(pool=True))
    mailer = Mailer([provider(server), p2], send_timeout=0.6,
                    retry={"attempts": 1})  # fmt: skip
    async with mailer:
        message = messages(1)[0]
        if kind is TransientError:
            # the deadline is for the whole send: spent waiting on "a", it left none for
            # "b"; nothing was sent, and the caller keeps the message to retry
            with pytest.raises(AllProvidersFailed) as info:
                await mailer.send(message)
            assert isinstance(info.value.errors["a"], TransientError)
            assert not info.value.possibly_delivered
        else:
            with pytest.raises(DeliveryUncertain):
                await mailer.send(message)
        after = await run_load(mailer, messages(20), concurrency=4, timeout=10)
    await anyio.sleep(0.05)
    check_ledger(after, {"a": server.received(), "b": spare.received()})


async def test_waiting_for_a_pool_slot_past_the_deadline_is_not_uncertain(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    # A send queued behind a hung connection has sent nothing: when the deadline passes
    # while it waits for a pool slot, it fails over (TransientError), not uncertain.
    server = smtp()
    hang = server.state.fail("RCPT", "hang", times=1)
    p = SMTPProvider.from_config("a", server.config(pool=True, max_connections=1,
                                                    socket_timeout=3.0))  # fmt: skip
    hung = Mailer([p], send_timeout=3)
    queued = Mailer([p], send_timeout=0.5, retry={"attempts": 1})
    async with anyio.create_task_group() as tg:
        tg.start_soon(hung.send, messages(1)[0])  # holds the only connection, hung
        # hung at RCPT (an event: after a guessed 0.2 s a loaded machine's first send
        # could still be connecting, and the second would not queue for the slot at all)
        assert await eventually(lambda: hang.fired, timeout=10, interval=0.005)
        try:
            with pytest.raises(AllProvidersFailed) as info:
                await queued.send(messages(1)[0])
            assert not info.value.possibly_delivered
            assert "no pooled connection became free" in str(info.value.errors["a"])
        finally:
            tg.cancel_scope.cancel()
    await p.aclose()
