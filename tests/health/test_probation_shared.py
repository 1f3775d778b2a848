"""Probation across processes (issue 21, item 18, with the Redis health store).

A primary that hangs at MAIL passes its background probe (connect, EHLO, QUIT); closing
on that alone made every rest end the same way, so a probe-only recovery is on
probation: the next opening grows the rest. In one process that held; with the Redis
store the success script reset the count on any probe, so when one process probed and
another met the hang, the rest started again at ``cooldown``. Here two Mailers (each
its own Runtime, breakers and Redis connections, as two processes have) take turns:
one probes, the other fails, and the shared rest must grow 0.5, 1, 2 s; a real send's
success clears it. Against the suite's real Redis and real SMTP servers on 127.0.0.1.
Redis's clock cannot be faked, so the rests are short and real, every wait a bounded poll.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.health.redis_kit import RedisServer

from mailer import Mailer, Message
from mailer._routing.store_scripts import ProviderView
from mailer.testing import SMTPSink, SMTPTestServer, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COOLDOWN = 0.5


def msg(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")


def build(url: str, prefix: str, primary: dict[str, Any], backup_port: int) -> Mailer:
    return Mailer.from_config({
        "providers": [
            {"type": "smtp", "name": "primary", "config": primary},
            f"smtp://127.0.0.1:{backup_port}?name=backup",
        ],
        "health": {"store": url, "prefix": prefix, "cooldown": COOLDOWN, "max_cooldown": 30,
                   "refresh": 0.1},
        "retry": {"attempts": 1},
        "budget": {"pre_commit": 0.3, "max": 1.0},
    })  # fmt: skip


async def shared(m: Mailer) -> ProviderView:
    """The store's view of the primary, once this Mailer's verdicts are written (a
    send does not wait for its write)."""
    store = m._runtime.shared
    assert store is not None and store.connected
    assert await eventually(lambda: not store._writes)
    (view,) = await store.views(["primary"])
    return view


def state(m: Mailer) -> str:
    return str(m.health()["primary"]["state"])


async def test_probation_holds_across_processes(redis_server: RedisServer, prefix: str) -> None:
    with SMTPTestServer(None, auth=False) as hung:
        hung.state.fail("MAIL", "hang")
        async with SMTPSink(name="backup") as sink:
            config = hung.config(pool=False)
            a = build(redis_server.url, prefix, config, sink.port)
            b = build(redis_server.url, prefix, config, sink.port)
            async with a, b:
                assert await eventually(lambda: bool(a._runtime.shared.connected  # type: ignore[union-attr]
                                                     and b._runtime.shared.connected))  # type: ignore[union-attr]  # fmt: skip
                n = 0
                rests: list[float] = []

                async def meets_the_hang(m: Mailer) -> None:
                    """A send through a closed primary: waits the budget, then the
                    backup; the shared rest it opened is recorded."""
                    nonlocal n
                    assert await eventually(lambda: state(m) == "closed", timeout=5)
                    n += 1
                    result = await m.send(msg(n))
                    assert result.provider == "backup"
                    assert [a.provider for a in result.attempts] == ["primary", "backup"]
                    view = await shared(m)
                    assert view.state.value == "open"
                    rests.append(view.remaining)

                async def probes(m: Mailer) -> None:
                    """After the rest, a send claims the probe (a background verify,
                    which passes: EHLO answers); the send itself goes to the backup."""
                    assert await eventually(lambda: state(m) == "open", timeout=5)
                    view = await shared(m)
                    assert await eventually(lambda: m.health()["primary"]["retry_in"] == 0,
                                            timeout=view.remaining + 5)  # fmt: skip
                    nonlocal n
                    n += 1
                    assert (await m.send(msg(n))).provider == "backup"
                    assert await eventually(lambda: state(a) == state(b) == "closed", timeout=5)
                    assert (await shared(m)).probation > 0  # closed, on probation

                await meets_the_hang(a)  # 0.5 s
                await probes(b)
                await meets_the_hang(a)  # B probed, A failed: 1 s
                await probes(a)
                await meets_the_hang(b)  # A probed, B failed: 2 s
                assert rests == pytest.approx([COOLDOWN, 2 * COOLDOWN, 4 * COOLDOWN], abs=0.15)

                # A real send's success ends probation for every process: the next
                # opening rests ``cooldown`` again.
                with hung.state.lock:
                    hung.state.faults.clear()
                await probes(a)
                assert (await b.send(msg(100))).provider == "primary"
                assert await eventually(lambda: a._runtime.leaves["primary"].breaker.probation == 0)
                assert (await shared(b)).probation == 0
                hung.state.fail("MAIL", "hang")
                rests.clear()
                await meets_the_hang(a)
                assert rests == pytest.approx([COOLDOWN], abs=0.15)
