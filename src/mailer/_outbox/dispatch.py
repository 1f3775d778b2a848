"""Delivery on the app's task queue: the outbox publishes "deliver row N", an engine's
worker runs it (docs/task-queues.md).

The outbox stays the source of truth. The engine's acknowledgement decides nothing: a
task claims its row under the outbox's lease, and sends only when the row is ``queued``
and due. So a task the engine runs twice (redelivered after a visibility timeout, after a
worker killed under ``acks_late``, an explicit retry) finds the row ``sending`` (leased by
a live worker), ``sent`` or ``unknown``, and sends nothing; the commit-point record, as
for ``mailer worker``, decides what a dead worker's row becomes.

Publishing happens after the row is committed, and its failure is only logged: the row
is safe, and :func:`sweep` publishes again any row still queued ``sweep_after`` seconds
after it came due. A lost task delays a message; it never loses one.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio

from .._log import get_logger
from .config import DispatchConfig
from .store import Claimed

if TYPE_CHECKING:
    from .worker import Outbox

__all__ = ["DispatchStore", "Publisher", "deliver_row", "publish", "sweep"]

log = get_logger("mailer.outbox.dispatch")


class DispatchStore(Protocol):
    """What dispatch needs from a store besides :class:`~.store.OutboxStore`."""

    async def dispatched(self, message_id: str, engine: str) -> int | None: ...

    async def redispatched(self, row: int, engine: str) -> None: ...

    async def claim_row(
        self, row: int, owner: str, *, lease: float, max_age: float
    ) -> Claimed | str: ...

    async def overdue(self, engine: str, *, grace: float, limit: int = 1000) -> list[int]: ...

    async def dispatch_stats(self) -> dict[str, dict[str, int]]: ...

    async def renew(self, owner: str, *, lease: float) -> int: ...


class Publisher(Protocol):
    """Hands "deliver row N, in ``delay`` seconds" to one engine."""

    engine: str

    async def publish(self, row: int, delay: float) -> None: ...

    async def aclose(self) -> None: ...


def dispatch_store(outbox: Outbox) -> DispatchStore:
    """The outbox's store, which must support dispatch (SQLite and Postgres do)."""
    store = outbox.store
    if not hasattr(store, "claim_row"):
        from .._errors import ConfigError

        raise ConfigError(f"{store!r} does not support dispatch to a task engine")
    return cast(DispatchStore, store)


async def publish(outbox: Outbox, message_id: str, delay: float) -> None:
    """Publish ``message_id``'s task (its row committed already). Never raises: a task
    that could not be published is published again by the sweep."""
    publisher = outbox.publisher()
    if publisher is None:
        return
    try:
        row = await dispatch_store(outbox).dispatched(message_id, publisher.engine)
        if row is not None:
            await publisher.publish(row, max(delay, 0.0))
    except Exception as exc:
        log.warning(
            "outbox %s: its %s task was not published (%s); the sweep will publish it",
            message_id,
            publisher.engine,
            exc,
        )


async def deliver_row(outbox: Outbox, row: int) -> str:
    """The task: claim row ``row`` and deliver it, once. Returns the row's new state, or
    why nothing was sent (the state found, ``"not due"``, ``"missing"``).

    With ``dispatch.batch`` above 1 the task also claims up to ``batch - 1`` other due
    rows and sends them all at once, on the process's one Mailer (its SMTP pool, the
    store's grouped commit-point records), as ``mailer worker`` does with
    ``concurrency``: the engine's cost per task (a broker round trip, the pool's
    hand-off) is then shared by several messages. Never twice still holds by the claim:
    each row is leased to one task, and the task published for a row another task took
    finds it ``sending`` or ``sent`` and sends nothing (it may take other due rows).
    """
    store = dispatch_store(outbox)
    core = await outbox._ready()
    config = outbox.config
    batch = 1 if config.dispatch is None else config.dispatch.batch
    owner = f"{socket.gethostname()}:{os.getpid()}:task:{secrets.token_hex(4)}"
    found = await store.claim_row(row, owner, lease=config.lease, max_age=config.max_age)
    items = [found] if isinstance(found, Claimed) else []
    if batch > 1:
        try:
            items += await core.claim(owner, batch - 1, lease=config.lease, max_age=config.max_age)
        except Exception:
            log.exception("outbox row %d: claiming more due rows failed; this row alone", row)
    if isinstance(found, str):
        log.info("outbox row %d: %s, nothing to send", row, found)
        if not items:
            return found
    states: dict[int, str] = {}

    async def one(item: Claimed) -> None:
        outcome = await outbox._attempt(core, item)
        await outbox._record(core, item, outcome)
        states[item.row] = outcome.state
        if outcome.state == "queued" and outcome.next_at is not None:
            await _again(outbox, item.row, outcome.next_at - time.time())

    async def heartbeat() -> None:
        while True:
            await anyio.sleep(config.lease / 3)
            try:
                await store.renew(owner, lease=config.lease)
            except Exception:
                log.exception("outbox heartbeat failed (the lease may expire)")

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        async with anyio.create_task_group() as sends:
            for item in items:
                sends.start_soon(one, item)
        tg.cancel_scope.cancel()
    if len(items) > 1:
        log.debug("outbox row %d: its task delivered %d rows", row, len(items))
    return found if isinstance(found, str) else states[row]


async def _again(outbox: Outbox, row: int, delay: float) -> None:
    """The next try of a transient failure, through the engine's countdown."""
    publisher = outbox.publisher()
    assert publisher is not None
    try:
        await dispatch_store(outbox).redispatched(row, publisher.engine)
        await publisher.publish(row, max(delay, 0.0))
    except Exception as exc:
        log.warning("outbox row %d: its retry was not published (%s); the sweep will", row, exc)


async def sweep(outbox: Outbox, *, limit: int = 1000) -> int:
    """Publish again the tasks of rows still queued ``sweep_after`` seconds after they
    came due (their task was lost), after settling expired leases. Returns how many."""
    publisher = outbox.publisher()
    if publisher is None:
        return 0
    assert outbox.config.dispatch is not None
    await outbox._ready()
    rows = await dispatch_store(outbox).overdue(
        publisher.engine, grace=outbox.config.dispatch.sweep_after, limit=limit
    )
    published = 0
    for row in rows:
        try:
            await publisher.publish(row, 0.0)
            published += 1
        except Exception as exc:
            log.warning("outbox sweep: row %d not published (%s); next sweep", row, exc)
            break
    if rows:
        log.warning("outbox sweep: %d lost task(s) published again", published)
    return published


def open_publisher(config: DispatchConfig) -> Publisher:
    """The engine's publisher (its library imported now, not with ``mailer``)."""
    from . import publishers

    factory: dict[str, Any] = {
        "celery": publishers.CeleryPublisher,
        "rq": publishers.RQPublisher,
        "arq": publishers.ArqPublisher,
        "django": publishers.DjangoPublisher,
    }
    result: Publisher = factory[config.engine](config)
    return result
