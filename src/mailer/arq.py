"""arq integration: ``arq mailer.arq.WorkerSettings`` delivers (docs/task-queues.md).

The config comes from ``$MAILER_CONFIG`` (or Django's ``settings.MAILER``), with
``outbox.dispatch = {engine = "arq", redis = "redis://..."}``; the worker connects to
that Redis, runs ``mailer.deliver`` (one argument: the row id) and the sweep as a cron
job. ``arq`` is imported here, so only when this module is.
"""

from __future__ import annotations

from typing import Any

from arq import cron, func
from arq.connections import RedisSettings

from ._integrations import tasks as _tasks
from ._integrations._process import read_source
from ._mailer import Mailer
from ._outbox.config import DispatchConfig
from ._outbox.publishers import ARQ_TASK

__all__ = ["WorkerSettings", "deliver", "sweep"]


async def deliver(ctx: dict[str, Any], row: int) -> str:
    """Deliver outbox row ``row`` once: its new state, or why nothing was sent."""
    mailer: Mailer = ctx["mailer"]
    return await mailer.outbox.deliver_row(_tasks.row_id(row))


async def sweep(ctx: dict[str, Any]) -> int:
    """Publish again the tasks that were lost; how many."""
    mailer: Mailer = ctx["mailer"]
    return await mailer.outbox.sweep()


def _data() -> dict[str, Any]:
    data = read_source(_tasks.config_source())
    data.pop("django", None)
    _tasks.check_engine(data, "arq")
    return data


async def _startup(ctx: dict[str, Any]) -> None:
    ctx["mailer"] = Mailer.from_config(_data())


async def _shutdown(ctx: dict[str, Any]) -> None:
    mailer = ctx.pop("mailer", None)
    if mailer is not None:
        await mailer.aclose()


def _redis_settings() -> RedisSettings:
    redis = DispatchConfig.model_validate(_data()["outbox"]["dispatch"]).redis
    assert redis is not None
    return RedisSettings.from_dsn(redis)


class _Settings(dict[str, Any]):
    """arq's settings as a mapping (arq reads a dict's items, a class's ``__dict__``),
    whose ``redis_settings`` comes from the config when arq asks, not at import."""

    def __missing__(self, key: str) -> Any:
        if key != "redis_settings":
            raise KeyError(key)
        return _redis_settings()

    def items(self) -> Any:  # what arq's run_worker reads
        return {**self, "redis_settings": self["redis_settings"]}.items()


#: ``arq mailer.arq.WorkerSettings``: the delivery task and the sweep (every minute, and
#: when the worker starts)
WorkerSettings = _Settings(
    functions=[func(deliver, name=ARQ_TASK)],  # type: ignore[arg-type]
    cron_jobs=[cron(sweep, second={0}, run_at_startup=True)],  # type: ignore[arg-type]
    on_startup=_startup,
    on_shutdown=_shutdown,
)
