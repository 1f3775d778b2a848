"""The ``suppression`` and ``events`` blocks of the Mailer config (docs/configuration.md).

``suppression = "sqlite:///mail.db"`` is short for ``suppression = {store = "sqlite:///mail.db"}``.
Durations are seconds, or strings with a unit (``"2s"``, ``"90d"``), as in the outbox.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._errors import ConfigError
from .._outbox.config import Duration
from .._redact import redact_url

__all__ = ["DEFAULT_ON", "SUPPRESSING", "EventsConfig", "SuppressionConfig", "check_store_url"]

#: what suppresses a recipient unless ``suppression.on`` says otherwise
DEFAULT_ON: tuple[str, ...] = ("bounced:hard", "complained", "unsubscribed")
#: every value ``suppression.on`` may hold
SUPPRESSING: frozenset[str] = frozenset(
    {"bounced", "bounced:hard", "bounced:soft", "complained", "unsubscribed", "rejected"}
)


def check_store_url(url: str, what: str) -> str:
    """``sqlite:///file.db``, ``postgresql://...`` or ``redis://...``; ConfigError, without
    echoing the URL (it may hold a password), for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"{what}: not a valid URL") from None
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path or path == ":memory:":
            raise ConfigError(
                f"{what}: sqlite:///relative/path.db or sqlite:////absolute/path.db "
                "(a file: an in-memory database is not shared or durable)"
            )
        return url
    if parts.scheme in ("postgresql", "postgres", "redis", "rediss"):
        return url
    raise ConfigError(
        f"{what} must start with sqlite:///, postgresql:// or redis:// "
        f"(got scheme {parts.scheme or 'none'!r})"
    )


class SuppressionConfig(BaseModel):
    """The ``suppression`` block: where the list lives and what adds to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``sqlite:///mail.db``, ``postgresql://...``, ``redis://...``; None: this process
    #: only (a list in memory, lost at exit)
    store: str | None = None
    #: the event kinds that suppress a recipient (``bounced`` is any bounce)
    on: tuple[str, ...] = DEFAULT_ON
    #: how often the local copy asks the store for entries other processes added (seconds)
    refresh: Duration = Field(default=1.0, gt=0, le=60)
    #: check recipients before every send; False turns the check off for this Mailer
    check: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return {"store": value} if isinstance(value, str) else value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        return None if value is None else check_store_url(value, "suppression.store")

    @field_validator("on")
    @classmethod
    def _on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - SUPPRESSING)
        if unknown:
            raise ValueError(
                f"suppression.on: unknown kinds {unknown}; allowed: {sorted(SUPPRESSING)}"
            )
        return tuple(dict.fromkeys(value))

    def suppresses(self, key: str) -> bool:
        """Whether an event's :attr:`~DeliveryEvent.suppression_key` adds its recipient."""
        return key in self.on or (key.startswith("bounced:") and "bounced" in self.on)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "store" and value else value


class EventsConfig(BaseModel):
    """The ``events`` block: where delivery events are kept, and for how long.

    Events go into the outbox's database when there is one, else into the suppression
    store; ``store`` names another. Redis keeps events too (each with a TTL of
    ``retention``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = None
    #: events (and the record of which provider id each send got) older than this are
    #: deleted (default 30 days); the dedupe window for event ids is the same
    retention: Duration = Field(default=30 * 86400.0, gt=0)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        return None if value is None else check_store_url(value, "events.store")

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "store" and value else value
