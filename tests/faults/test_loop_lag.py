"""A starved event loop is this process's slowness, not the provider's (mailer._looplag).

The failure this guards against: sends started in a burst build their messages in their
tasks' first steps, CPU work that holds the event loop for longer than the pre-commit
budget. The first send's reply arrives in time and waits unread in its socket; when the
loop runs again, the budget's timers fire and, counting wall time, judge the server hung:
its breaker opens and every queued send is released to the backup (or fails without
one). Here the loop is starved for real, by CPU work in the test's own process, against
the kit's aiosmtpd server (its own thread, so it answers on time): the sends must go out
on the primary, once each. And a server that really hangs must still be left, after a
budget of the loop's own running time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mailer import Mailer, Message
from mailer.providers._smtp import SMTPProvider
from mailer.testing import ScriptedProvider, SilentServer, SMTPTestServer, eventually

from .kit import messages
from .lagkit import BUDGET, SHORT, SLACK, burn, failed_attempts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lag monitor is asyncio's (trio counts wall time)


def provider(name: str, config: dict[str, Any], **overrides: Any) -> SMTPProvider:
    """The server's config with its short test timeouts removed: the defaults apply."""
    settings = {k: v for k, v in config.items() if not k.endswith("_timeout")}
    return SMTPProvider.from_config(name, {**settings, **overrides})


@pytest.mark.parametrize("turns", [2, 5, 12, 30])
async def test_a_loop_starved_during_set_up_does_not_fail_the_send(
    smtp: Callable[..., SMTPTestServer], turns: int
) -> None:
    """The loop is held for longer than the budget a few turns after the send starts:
    while it connects, reads the greeting or EHLO (how far it got in ``turns`` depends on
    the machine, hence several). Every timer of the attempt fires late; none may blame
    the server."""
    server = smtp()
    backup = ScriptedProvider("backup")
    mailer = Mailer([provider("primary", server.config(), pool=True), backup], budget=SHORT)
    async with mailer:
        task = asyncio.create_task(mailer.send(messages(1)[0]))
        for _ in range(turns):
            await asyncio.sleep(0)
        burn(SHORT["pre_commit"] + 0.6)
        result = await asyncio.wait_for(task, 10)
        assert result.provider == "primary", failed_attempts(result)
        assert not failed_attempts(result)
        assert mailer.health()["primary"]["state"] == "closed"
    assert backup.calls == 0 and sum(server.received().values()) == 1


@pytest.mark.parametrize(
    ("delay", "what"),
    [
        (0.2, "the reply arrives during the stall and waits in the socket"),
        (SHORT["pre_commit"] + 0.8, "the reply comes after the stall, past the wall budget"),
    ],
)
async def test_a_loop_starved_mid_envelope_does_not_fail_the_send(
    smtp: Callable[..., SMTPTestServer], delay: float, what: str
) -> None:
    """A warm pooled connection; MAIL is answered ``delay`` s late, and the loop is held
    past the budget from the moment the server has MAIL (its fault fired: an event, not
    a guessed 0.1 s, after which a loaded machine's send might not have written MAIL
    yet, and would then meet the late reply with a running loop). In the second case the
    server took longer than the budget in wall time, but the loop ran only until MAIL
    went out and after the stall before its reply: the budget counts the provider's
    time, not the loop's."""
    server = smtp()
    mailer = Mailer([provider("primary", server.config(), pool=True)], budget=SHORT)
    first, second = messages(2)
    async with mailer:
        await mailer.send(first)  # the connection is set up and pooled
        late = server.state.fail("MAIL", f"delay:{delay:g}", times=1)
        started = time.monotonic()
        task = asyncio.create_task(mailer.send(second))
        # MAIL (with RCPT and DATA: PIPELINING) is written, and its answer is on the way
        assert await eventually(lambda: late.fired, timeout=10, interval=0.005)
        burn(SHORT["pre_commit"] + 0.5)
        result = await asyncio.wait_for(task, 10)
        took = time.monotonic() - started
        assert result.provider == "primary" and not failed_attempts(result), what
        assert mailer.health()["primary"]["state"] == "closed"
    assert took < SHORT["pre_commit"] + 0.5 + delay + SLACK
    assert server.received()[second.message_id] == 1


async def test_a_burst_that_starves_the_loop_does_not_fail_the_queue(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    """The production case, with the default settings: a send is under way on a pooled
    connection when 150 more start at once, each building its message for 25 ms in its
    first step (3.75 s of CPU, more than the 3 s budget). Before the loop's lag was
    measured, the first send's attempt was judged hung, its breaker opened, and all 150
    went to the backup. Now every send goes out on the primary, once, and the adaptive
    budget has not learned the stall as set-up time."""
    server = smtp()
    backup = ScriptedProvider("backup")
    mailer = Mailer([provider("primary", server.config(), pool=True, max_connections=1),
                     backup])  # fmt: skip
    batch = messages(151)
    outcomes: dict[str, Any] = {}

    async def one(message: Message, build: float) -> None:
        burn(build)  # building the message: CPU work in the task's first step
        outcomes[message.message_id] = await mailer.send(message)

    async with mailer:
        first = asyncio.create_task(one(batch[0], 0.0))
        for _ in range(3):
            await asyncio.sleep(0)  # the first send is under way, not yet answered
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(first, *(one(m, 0.025) for m in batch[1:])), timeout=45
        )
        took = time.monotonic() - started
        budget_after = mailer.health()["primary"]["budget"]
        assert mailer.health()["primary"]["state"] == "closed"
    assert took > BUDGET, "the loop was not held past the budget: the test proves nothing"
    reasons = Counter(e for r in outcomes.values() for e in failed_attempts(r))
    assert not reasons, reasons.most_common(3)
    assert Counter(r.provider for r in outcomes.values()) == {"primary": 151}
    assert backup.calls == 0
    assert all(server.received()[m.message_id] == 1 for m in batch)
    assert budget_after < BUDGET + 1.0


async def test_the_burst_fails_over_when_the_budget_counts_wall_time(
    smtp: Callable[..., SMTPTestServer],
) -> None:
    """``budget.loop_lag = false`` restores the wall-clock budget: the same starvation
    (during set-up, on a 1 s budget) fails the healthy primary over. It shows the test
    above reproduces the failure, and that the option does what it says."""
    server = smtp()
    backup = ScriptedProvider("backup")
    mailer = Mailer(
        [provider("primary", server.config(), pool=True), backup],
        budget={**SHORT, "loop_lag": False},
    )
    async with mailer:
        task = asyncio.create_task(mailer.send(messages(1)[0]))
        for _ in range(8):
            await asyncio.sleep(0)
        burn(SHORT["pre_commit"] + 0.6)
        result = await asyncio.wait_for(task, 10)
    assert result.provider == "backup"
    (error,) = failed_attempts(result)
    assert "pre-commit budget" in error, error
    assert sum(server.received().values()) == 0  # nothing was sent to the primary


async def test_a_hung_server_is_still_left_after_a_budget_of_running_time() -> None:
    """A silent server (accepts, never greets) and a loop held for 1.5 s right after the
    send starts: the attempt is abandoned after the default budget of the loop's own
    running time (3 s + the 1.5 s stall), the backup takes the send, and the hang is
    still a verdict (the breaker opens)."""
    dead = SilentServer().start()
    try:
        primary = provider("primary", {"host": "127.0.0.1", "port": dead.port,
                                       "ignore_tls": True})  # fmt: skip
        backup = ScriptedProvider("backup")
        mailer = Mailer([primary, backup])  # every setting at its default
        stall = 1.5
        async with mailer:
            started = time.monotonic()
            task = asyncio.create_task(mailer.send(messages(1)[0]))
            for _ in range(8):
                await asyncio.sleep(0)
            burn(stall)
            result = await asyncio.wait_for(task, 20)
            took = time.monotonic() - started
            state = mailer.health()["primary"]["state"]
        assert result.provider == "backup"
        assert [a.outcome for a in result.attempts] == ["TransientError", "sent"]
        assert result.attempts[0].committed is False
        assert state == "open"
        # the budget counted only the loop's running time: not 3 s of wall time, and
        # not much more than 3 s of running time either
        assert BUDGET + stall - 0.3 <= took <= BUDGET + stall + SLACK, took
    finally:
        dead.stop()


async def test_a_hung_server_on_an_idle_loop_is_left_at_the_budget() -> None:
    """The control: nothing holds the loop, so nothing is added to the budget."""
    dead = SilentServer().start()
    try:
        primary = provider("primary", {"host": "127.0.0.1", "port": dead.port,
                                       "ignore_tls": True})  # fmt: skip
        mailer = Mailer([primary, ScriptedProvider("backup")], budget=SHORT)
        async with mailer:
            started = time.monotonic()
            result = await mailer.send(messages(1)[0])
            took = time.monotonic() - started
        assert result.provider == "backup"
        assert SHORT["pre_commit"] * 0.95 <= took <= SHORT["pre_commit"] + 0.3, took
    finally:
        dead.stop()
