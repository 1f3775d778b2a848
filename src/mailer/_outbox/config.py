"""The outbox's configuration: where it lives, how long and how often to retry.

``outbox = "sqlite:///outbox.db"`` is short for ``outbox = {url = "sqlite:///outbox.db"}``.
Durations are seconds, or strings with a unit: ``"30s"``, ``"5m"``, ``"2h"``, ``"3d"``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .._errors import ConfigError
from .._redact import redact_url

__all__ = [
    "BackoffConfig",
    "DispatchConfig",
    "OutboxConfig",
    "StoreURL",
    "parse_duration",
    "parse_store_url",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90"``, ``"30s"``, ``"5m"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '7d'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m is not None:
            number, unit = float(m.group(1)), m.group(2) or "s"
            return number / 1000.0 if unit == "ms" else number * _UNITS[unit]
    raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '7d'")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class BackoffConfig(BaseModel):
    """When a message that no provider took is tried again.

    The n-th retry waits ``min(max, initial * multiplier ** (n - 1))`` seconds, scaled by
    a random factor in ``[1 - jitter, 1 + jitter]`` so that messages queued together in an
    outage do not all come back in the same second. The defaults retry first after 7.5 to
    22.5 s, then about 30 s, 1 min, 2 min ... up to an hour.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial: Duration = Field(default=15.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    max: Duration = Field(default=3600.0, gt=0)
    jitter: float = Field(default=0.5, ge=0.0, lt=1.0)


class DispatchConfig(BaseModel):
    """The outbox's ``dispatch`` table: which task engine delivers (docs/task-queues.md).

    The engine only carries "deliver row N"; the outbox stays the source of truth.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["celery", "django", "rq", "arq"]
    #: celery: the app, as ``"module:attribute"`` (``"proj.celery:app"``)
    app: str | None = None
    #: rq, arq: the Redis server the engine's queue lives on
    redis: str | None = None
    #: celery, rq: the queue the tasks go to (celery: None is the app's default queue)
    queue: str | None = None
    #: a due row still queued this long after its task was published is swept again
    sweep_after: Duration = Field(default=60.0, gt=0)
    #: how often the periodic sweep task runs (celery beat, arq cron)
    sweep_every: Duration = Field(default=60.0, gt=0)
    #: rows one task may deliver at once: its own and up to ``batch - 1`` other due
    #: ones (their own tasks then find them taken and send nothing). 1: one message per
    #: task, so a killed worker process leaves at most one row ``unknown``; more: that
    #: many in flight per task, as ``mailer worker``'s ``concurrency``
    batch: int = Field(default=1, ge=1, le=1024)

    @model_validator(mode="after")
    def _check_engine(self) -> DispatchConfig:
        if self.engine == "celery" and self.app is not None and ":" not in self.app:
            raise ConfigError('dispatch: app is "module:attribute", e.g. "proj.celery:app"')
        if self.engine in ("rq", "arq") and not self.redis:
            raise ConfigError(f'dispatch: engine "{self.engine}" needs redis = "redis://..."')
        if self.redis is not None and urlsplit(self.redis).scheme not in (
            "redis",
            "rediss",
            "unix",
        ):
            raise ConfigError("dispatch: redis must be a redis://, rediss:// or unix:// URL")
        if self.engine in ("django", "arq") and self.queue is not None:
            raise ConfigError(f'dispatch: engine "{self.engine}" takes no queue option')
        return self

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "redis" and value else value


class OutboxConfig(BaseModel):
    """The ``outbox`` table of the Mailer config (see docs/outbox.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``postgresql://...``
    url: str
    #: tries per message, counting every claim by a worker; then ``dead``
    max_attempts: int = Field(default=10, ge=1)
    #: how long a message may wait for delivery before it is ``dead`` (default 3 days)
    max_age: Duration = Field(default=3 * 86400.0, gt=0)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    #: how long a claim lasts without its worker's heartbeat (renewed every lease / 3)
    lease: Duration = Field(default=30.0, ge=0.5)
    #: how often an idle worker looks for due messages
    poll_interval: Duration = Field(default=1.0, gt=0)
    #: messages a worker (or ``drain``) sends at once; ``auto``: three times what the Mailer's
    #: admission gate admits (4 per connection slot), within 16-256, or 16 without a gate
    #: (a provider with no bounded connection count, or a rate limit). With the claim's
    #: commit-point record it is also the most not-yet-sent rows a SIGKILL leaves
    #: ``unknown`` (docs/outbox.md)
    concurrency: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = "auto"
    #: where a worker records the commit point: ``claim`` (the claim's own transaction,
    #: one durable write per claim), ``attempt`` (one durable write per message, as its
    #: attempt starts), or ``auto``: ``claim`` unless a provider has a ``rate_limit``
    #: (sends that may wait, claimed, before they start). docs/outbox.md
    commit_record: Literal["auto", "claim", "attempt"] = "auto"
    #: a task engine that delivers instead of ``mailer worker`` (docs/task-queues.md)
    dispatch: DispatchConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_url(self) -> OutboxConfig:
        parse_store_url(self.url)  # raises ConfigError
        return self

    def __repr_args__(self) -> Any:
        # the URL may hold a database password (this also covers nested reprs)
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "url" else value


class StoreURL(BaseModel):
    """A parsed store URL: which backend, and its target."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["sqlite", "postgresql"]
    #: the database file (sqlite) or the DSN (postgresql)
    target: str
    options: dict[str, str] = Field(default_factory=dict)


#: the SQLite store's durability levels (sqlite.py's docstring, docs/outbox.md)
_SYNCHRONOUS = ("auto", "full", "extra", "normal")


def parse_store_url(url: str) -> StoreURL:
    """``sqlite:///rel.db`` (relative), ``sqlite:////abs.db`` or ``postgresql://...``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("outbox URL is not a valid URL") from None
    if parts.scheme == "sqlite":
        if parts.netloc:
            raise ConfigError(
                "outbox URL: sqlite:///relative/path.db or sqlite:////absolute/path.db "
                "(three or four slashes, no host)"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or path == ":memory:":
            raise ConfigError(
                "outbox URL: a SQLite outbox needs a file (an in-memory one is not durable)"
            )
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ConfigError(f"outbox URL: unknown SQLite options {sorted(unknown)}")
        if options.get("synchronous", "auto").lower() not in _SYNCHRONOUS:
            raise ConfigError("outbox URL: synchronous must be auto, full, extra or normal")
        if "synchronous" in options:
            options["synchronous"] = options["synchronous"].lower()
        return StoreURL(kind="sqlite", target=str(Path(path)), options=options)
    if parts.scheme in ("postgresql", "postgres"):
        return StoreURL(kind="postgresql", target=url)
    raise ConfigError(
        "outbox URL must start with sqlite:/// or postgresql:// "
        f"(got scheme {parts.scheme or 'none'!r})"
    )
