"""A primary that hangs at MAIL passes its background probe (connect, EHLO, QUIT), so
each cooldown used to end with the breaker closed and the next real send hanging for the
whole budget, every 30 s, forever (issue 21, item 18). Now a probe-only recovery is on
probation: the next opening grows the rest. With the default settings (a fake clock for
the breakers; the budget's 3 s waits are real), against real servers on 127.0.0.1."""

from __future__ import annotations

import itertools
import time

import pytest

from mailer import Mailer, Message
from mailer._clock import FakeClock
from mailer.testing import SMTPSink, SMTPTestServer, eventually

pytestmark = pytest.mark.anyio


async def test_a_hung_primary_costs_one_wait_per_growing_interval() -> None:
    clock = FakeClock(1000.0)
    with SMTPTestServer(None, auth=False) as primary:
        primary.state.fail("MAIL", "hang")
        async with SMTPSink(name="backup") as sink:
            config = {"providers": [
                {"type": "smtp", "name": "primary", "config": primary.config()},
                f"smtp://127.0.0.1:{sink.port}?name=backup",
            ]}  # fmt: skip
            async with Mailer.from_config(config, clock=clock) as mailer:
                leaves = mailer._runtime.leaves.values()
                waits: list[float] = []  # the fake time of each send that waited
                rests: list[float] = []  # each opening's rest, in fake seconds
                for step in range(400):  # one send a (fake) second, at most 400 s
                    started = time.monotonic()
                    result = await mailer.send(
                        Message(sender="app@example.com", to=[f"u{step}@example.org"],
                                subject="s", text="t")
                    )  # fmt: skip
                    assert result.provider == "backup"  # never lost, always delivered
                    if time.monotonic() - started > 1.0:
                        waits.append(clock.now)
                        breaker = mailer._runtime.leaves["primary"].breaker
                        rests.append(breaker.open_until - clock.now)
                    # a probe started by this send finishes (it passes: EHLO answers)
                    assert await eventually(lambda: all(leaf.probe is None for leaf in leaves),
                                            timeout=10)  # fmt: skip
                    if len(waits) == 3:
                        break
                    clock.advance(1.0)
    assert len(waits) == 3, (waits, rests)
    assert rests == pytest.approx([30.0, 60.0, 120.0], abs=1.0)
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert gaps[0] >= 30 and gaps[1] >= 60, gaps  # not one wait every 30 s
