"""The worker's concurrency: ``auto`` derived from the Mailer's admission gate, the
claim threshold that keeps the gate full while a claim is in flight, and bad values
refused before anything opens. The drain itself runs against a real SMTP server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mailer import ConfigError, Mailer
from mailer._outbox.claiming import AUTO_MAX, AUTO_MIN, AUTO_NO_GATE, Worker, shape
from mailer.testing import SMTPTestServer

from .conftest import fast_outbox, make_message, smtp_entry


@pytest.mark.parametrize(
    ("concurrency", "capacity", "expected"),
    [
        ("auto", 20, (60, 20)),  # 5 pooled connections: 20 admitted, 40 more held
        ("auto", 4, (AUTO_MIN, 6)),  # 1 connection: never below AUTO_MIN
        ("auto", 200, (AUTO_MAX, 28)),  # never above AUTO_MAX: half of it in a claim
        ("auto", None, (AUTO_NO_GATE, 8)),  # no gate (unpooled, or a rate limit)
        (16, 20, (16, 8)),  # at or below the gate: half the slots, as before
        (16, None, (16, 8)),
        (64, 20, (64, 22)),  # above it: half of what is held beyond the gate
        (1, None, (1, 1)),
    ],
)
def test_shape(concurrency: Any, capacity: int | None, expected: tuple[int, int]) -> None:
    assert shape(concurrency, capacity) == expected


def pooled(port: int, connections: int) -> dict[str, Any]:
    entry = smtp_entry("smtp", port, 1)
    entry["config"] |= {"pool": True, "max_connections": connections}
    return entry


@pytest.mark.anyio
@pytest.mark.parametrize(("connections", "expected"), [(5, (60, 20)), (1, (16, 6))])
async def test_auto_follows_the_mailers_gate(
    connections: int,
    expected: tuple[int, int],
    smtp: Callable[..., SMTPTestServer],
    tmp_path: Path,
) -> None:
    """The default concurrency on a pooled SMTP provider is three times what its gate admits
    (4 a connection); the drain sends every message once at that shape."""
    server = smtp()
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = {"providers": [pooled(server.port, connections)], "outbox": fast_outbox(url)}
    async with Mailer.from_config(config) as mailer:
        assert mailer.outbox.config.concurrency == "auto"
        assert mailer.outbox.capacity == 4 * connections
        worker = Worker(mailer.outbox, mailer.outbox.config.concurrency)
        assert (worker.concurrency, worker.batch) == expected
        ids = [await mailer.enqueue(make_message(i)) for i in range(60)]
        assert await mailer.drain(timeout=30) == {"sent": 60}
    assert server.received() == dict.fromkeys(ids, 1)


@pytest.mark.anyio
async def test_auto_without_a_gate_is_the_old_default(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """Unpooled SMTP (the default) bounds no connections, so the Mailer has no gate and
    ``auto`` is 16; so is a pooled provider paced by a rate limit."""
    server = smtp()
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    paced = pooled(server.port, 5)
    paced["config"]["rate_limit"] = {"messages": 1000, "per": 1}
    for entry in (smtp_entry("smtp", server.port, 1), paced):
        config = {"providers": [entry], "outbox": fast_outbox(url)}
        async with Mailer.from_config(config) as mailer:
            assert mailer.outbox.capacity is None
            worker = Worker(mailer.outbox, "auto")
            assert (worker.concurrency, worker.batch) == (16, 8)


@pytest.mark.parametrize("value", ["many", 0, 1025, -3, 2.5])
def test_a_bad_concurrency_is_refused_before_anything_opens(value: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with pytest.raises(ConfigError, match="concurrency"):
        Mailer.from_config(
            {"providers": [smtp_entry("smtp", 1, 1)], "outbox": fast_outbox(url, concurrency=value)}
        )
    assert not (tmp_path / "outbox.db").exists()


def test_an_explicit_concurrency_is_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = {"providers": [smtp_entry("smtp", 1, 1)], "outbox": fast_outbox(url, concurrency=48)}
    assert Mailer.from_config(config).outbox.config.concurrency == 48


def _hanging(port: int) -> dict[str, Any]:
    entry = pooled(port, 2)
    entry["config"]["socket_timeout"] = 30.0  # far longer than the test waits
    return entry


@pytest.mark.anyio
async def test_a_cancelled_drain_cancels_its_sends_and_returns(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """The sends run as the worker's own asyncio tasks: cancelling the drain cancels
    them too, as a task group did, rather than waiting for their replies."""
    server = smtp()
    server.state.fail("MAIL", "hang")
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = {"providers": [_hanging(server.port)], "outbox": fast_outbox(url)}
    async with Mailer.from_config(config) as mailer:
        for i in range(4):
            await mailer.enqueue(make_message(i))
        started = time.monotonic()
        with anyio.move_on_after(0.5) as scope:
            await mailer.outbox.drain(concurrency=4)
        # the sends' replies would take 30 s (the socket timeout): they were cancelled
        assert scope.cancelled_caught and time.monotonic() - started < 15.0
        assert "MAIL" in server.state.verbs()
        assert (await mailer.outbox.stats())["sent"] == 0
    assert server.received() == {}


@pytest.mark.anyio
async def test_a_send_that_fails_stops_the_drain_with_its_error(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """A send's task that ends with an error (a bug: an attempt's own errors are
    outcomes) stops the worker with it, and the other sends are cancelled."""
    server = smtp()
    server.state.fail("RCPT", "hang", match="user1@")
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = {"providers": [_hanging(server.port)], "outbox": fast_outbox(url)}
    async with Mailer.from_config(config) as mailer:
        await mailer.enqueue(make_message(0))
        await mailer.enqueue(make_message(1))  # hangs until cancelled
        record = mailer.outbox._record

        async def broken(store: Any, item: Any, outcome: Any, **kw: Any) -> None:
            await record(store, item, outcome, **kw)
            raise RuntimeError("a bug after the outcome was recorded")

        mailer.outbox._record = broken  # type: ignore[method-assign]
        started = time.monotonic()
        with pytest.raises(BaseException) as raised:
            await mailer.outbox.drain(concurrency=4)
        assert time.monotonic() - started < 15.0  # the hanging send was cancelled
        assert [str(e) for e in _leaves(raised.value)] == ["a bug after the outcome was recorded"]
        assert (await mailer.outbox.stats())["sent"] == 1


@pytest.mark.anyio
async def test_a_cancelled_drain_still_writes_the_outcome_being_recorded(
    smtp: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    """A send writing its outcome when the drain is cancelled is waited for, not
    cancelled: the message is recorded ``sent``, not left ``sending`` for its lease to
    settle as ``unknown``. (An anyio shield inside the send's task did not do this: a
    plain ``task.cancel()`` goes through it.)"""
    server = smtp()
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = {"providers": [smtp_entry("a", server.port, 1)], "outbox": fast_outbox(url)}
    async with Mailer.from_config(config) as mailer:
        await mailer.enqueue(make_message(0))
        store = await mailer.outbox._ready()
        finish = store.finish
        entered = anyio.Event()

        async def slow_finish(row: int, claim: str, outcome: Any) -> bool:
            entered.set()
            await anyio.sleep(0.3)  # the drain is cancelled meanwhile
            return await finish(row, claim, outcome)

        store.finish = slow_finish  # type: ignore[method-assign]
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(mailer.outbox.drain)
                await entered.wait()
                tg.cancel_scope.cancel()
        assert entered.is_set()
        assert (await mailer.outbox.stats())["sent"] == 1
    assert len(server.received()) == 1


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
