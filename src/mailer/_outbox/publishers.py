"""One publisher per task engine: "deliver row N in ``delay`` seconds", handed over
through the engine's own client (docs/task-queues.md).

Each imports its engine when built (``import mailer`` never does). The blocking clients
(Celery's, RQ's, Django's ORM) publish from a worker thread, so the Mailer's event loop
keeps sending meanwhile. Task names are stable and documented: ``mailer.deliver`` (Celery,
arq), ``mailer.rq.deliver`` (RQ), ``mailer.django.tasks.deliver`` (django.tasks).
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from .._errors import ConfigError
from .config import DispatchConfig

__all__ = [
    "ARQ_TASK",
    "CELERY_TASK",
    "DJANGO_TASK",
    "RQ_TASK",
    "ArqPublisher",
    "CeleryPublisher",
    "DjangoPublisher",
    "RQPublisher",
    "use_celery_app",
]

CELERY_TASK = "mailer.deliver"
ARQ_TASK = "mailer.deliver"
RQ_TASK = "mailer.rq.deliver"
DJANGO_TASK = "mailer.django.tasks.deliver"

#: the app ``mailer.celery.register`` was given: its worker publishes retries there
_celery_app: Any = None


def use_celery_app(app: Any) -> None:
    """Publish Celery tasks through ``app`` when the config names none (register)."""
    global _celery_app
    _celery_app = app


def _need(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"dispatch: the {extra} engine needs {module}: pip install 'mailer-failover[{extra}]'"
        ) from None


class CeleryPublisher:
    engine = "celery"

    def __init__(self, config: DispatchConfig) -> None:
        _need("celery", "celery")
        self.config = config
        self._app: Any = None

    def app(self) -> Any:
        if self._app is None:
            if self.config.app is not None:
                module, _, attribute = self.config.app.partition(":")
                self._app = getattr(importlib.import_module(module), attribute)
            elif _celery_app is not None:
                self._app = _celery_app
            else:
                raise ConfigError(
                    'dispatch: engine "celery" needs app = "proj.celery:app" (or '
                    "mailer.celery.register(app, config) in this process)"
                )
        return self._app

    async def publish(self, row: int, delay: float) -> None:
        app, queue = self.app(), self.config.queue

        def send() -> None:
            app.send_task(CELERY_TASK, args=(row,), countdown=delay or None, queue=queue)

        await anyio.to_thread.run_sync(send)

    async def aclose(self) -> None:
        return None


class RQPublisher:
    engine = "rq"

    def __init__(self, config: DispatchConfig) -> None:
        self.rq = _need("rq", "rq")
        self.config = config
        self._queue: Any = None

    def queue(self) -> Any:
        if self._queue is None:
            from redis import Redis

            assert self.config.redis is not None
            self._queue = self.rq.Queue(
                self.config.queue or "mail", connection=Redis.from_url(self.config.redis)
            )
        return self._queue

    async def publish(self, row: int, delay: float) -> None:
        queue = self.queue()

        def send() -> None:
            if delay > 0:
                queue.enqueue_in(timedelta(seconds=delay), RQ_TASK, row)
            else:
                queue.enqueue(RQ_TASK, row)

        await anyio.to_thread.run_sync(send)

    async def aclose(self) -> None:
        if self._queue is not None:
            await anyio.to_thread.run_sync(self._queue.connection.close)


class ArqPublisher:
    engine = "arq"

    def __init__(self, config: DispatchConfig) -> None:
        self.arq = _need("arq", "arq")
        self.config = config
        self._pool: Any = None

    async def publish(self, row: int, delay: float) -> None:
        if self._pool is None:
            from arq.connections import RedisSettings

            assert self.config.redis is not None
            settings = RedisSettings.from_dsn(self.config.redis)
            self._pool = await self.arq.create_pool(settings)
        await self._pool.enqueue_job(ARQ_TASK, row, _defer_by=delay or None)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


class DjangoPublisher:
    engine = "django"

    def __init__(self, config: DispatchConfig) -> None:
        self.config = config

    async def publish(self, row: int, delay: float) -> None:
        def send() -> None:
            from django.utils.module_loading import import_string

            task = import_string(DJANGO_TASK)
            if delay > 0:
                task = task.using(run_after=datetime.now(UTC) + timedelta(seconds=delay))
            task.enqueue(row)

        await anyio.to_thread.run_sync(send)

    async def aclose(self) -> None:
        return None
