"""The memory provider keeps a bounded tail, held by itself alone (issue 21, item 22):
100k sends once added 292 MiB, still held module-wide after the Mailer was closed."""

from __future__ import annotations

import gc
import weakref

import anyio
import pytest

from mailer import Mailer, Message
from mailer.providers import _memory
from mailer.testing import MemoryProvider

pytestmark = pytest.mark.anyio


def _message(i: int) -> Message:
    return Message(sender="app@example.com", to=[f"u{i}@example.org"], subject=f"m{i}",
                   text="x" * 1000)  # fmt: skip


def test_a_long_run_keeps_the_last_messages_and_frees_them_with_the_mailer() -> None:
    provider = MemoryProvider.from_config("memory", {"keep": 50})
    mailer = Mailer([provider])

    async def go(sending: Mailer) -> None:
        async with sending:
            for i in range(2200):
                await sending.send(_message(i))

    anyio.run(go, mailer, backend="asyncio")
    assert provider.accepted == 2200
    assert [m.subject for m in provider.messages] == [f"m{i}" for i in range(2150, 2200)]
    assert len(provider.raw) == 50 and b"Subject: m2199" in provider.raw[-1]
    assert _memory.outbox == []  # nothing module-wide outside the pytest fixture
    ref = weakref.ref(provider)
    del mailer, provider
    gc.collect()
    assert ref() is None  # what it kept went with it


async def test_the_default_keeps_a_thousand() -> None:
    provider = MemoryProvider()
    async with Mailer([provider]) as mailer:
        for i in range(1005):
            await mailer.send(_message(i))
    assert len(provider.messages) == 1000 and provider.messages[0].subject == "m5"


def test_the_outbox_fixture_still_collects(outbox: list[Message]) -> None:
    async def go() -> None:
        async with Mailer([MemoryProvider("a"), MemoryProvider("b")]) as mailer:
            await mailer.send(_message(1))
            await mailer.send(_message(2))

    anyio.run(go, backend="asyncio")
    assert [m.subject for m in outbox] == ["m1", "m2"]


def test_keep_must_be_positive() -> None:
    from mailer import ConfigError

    with pytest.raises(ConfigError, match="keep"):
        MemoryProvider.from_config("memory", {"keep": 0})


async def test_finished_attempts_are_not_kept_by_the_loops_timers() -> None:
    """Each attempt's scope arms a timer (send_timeout away) that stays in the loop's heap,
    cancelled, until its time; it must not keep the attempt (and what it holds) alive:
    2,000 sends in a second held 2,000 of them for a minute."""
    from mailer._attempt import AttemptContext

    def attempts_alive() -> int:
        # type(o), not isinstance(o, ...): isinstance reads o.__class__, and a lazy object
        # some earlier test left in the process (Django's unconfigured `settings`, once
        # tests/docs imported mailer.django) raises on any attribute it is asked for
        gc.collect()
        return sum(issubclass(type(o), AttemptContext) for o in gc.get_objects())

    # only this test's attempts: an earlier test's (a traceback still held) are not ours
    before = attempts_alive()
    async with Mailer([MemoryProvider(config=None)]) as mailer:
        for i in range(2000):
            await mailer.send(_message(i))
        alive = attempts_alive() - before
    assert alive < 10, alive
