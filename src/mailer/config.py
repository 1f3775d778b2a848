"""Mailer configuration: models, file loading, ``${ENV}`` interpolation and DSN URLs.

Everything is checked when the Mailer is built, so a bad config fails at start-up with
one clear ConfigError, never later in the middle of a failover. Error texts never echo
input values: a mistyped key may sit right next to a password.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .health import HealthConfig
from .provider import config_error_text

__all__ = ["MailerConfig", "ProviderEntry", "RetryConfig", "load_config", "parse_dsn"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ROUTING_PARAMS = ("priority", "weight", "name", "enabled")


class RetryConfig(BaseModel):
    """Same-provider retries, for transient errors only. Times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: total tries on one provider (1 = no retry)
    attempts: int = Field(default=2, ge=1, le=10)
    backoff: float = Field(default=0.2, ge=0)
    max_backoff: float = Field(default=2.0, ge=0)


class ProviderEntry(BaseModel):
    """One ``[[providers]]`` entry: which type, its routing, and its own config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = None
    priority: int | None = None
    weight: float = Field(default=1.0, gt=0)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_.+-]*", value):
            raise ValueError("provider type must be lowercase letters, digits, '_', '-'")
        return value


class MailerConfig(BaseModel):
    """The whole Mailer configuration (see docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderEntry] = Field(min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    on_uncertain: Literal["raise", "failover"] = "raise"
    send_timeout: float = Field(default=60.0, gt=0)
    health: HealthConfig = Field(default_factory=HealthConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("providers", mode="before")
    @classmethod
    def _dsns(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_dsn(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        allowed = {"sender", "from", "reply_to", "headers", "tags", "metadata", "cc", "bcc"}
        unknown = set(value) - allowed
        if unknown:
            raise ValueError(f"unknown defaults {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "from" in value:
            value = dict(value)
            value["sender"] = value.pop("from")
        return value


def parse_dsn(url: str) -> dict[str, Any]:
    """Split a DSN into a provider entry; the provider type turns the rest into config.

    ``resend://re_123@default?priority=3`` -> type "resend", priority 3, and whatever
    ``ResendProvider.config_from_url`` makes of the key. Routing parameters (priority,
    weight, name, enabled) are taken out of the query here, for every type alike.
    """
    from .plugins import load_provider_class

    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("provider URL is not a valid URL") from None
    if not parts.scheme:
        raise ConfigError("provider URL needs a scheme, like smtp:// or resend://")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    entry: dict[str, Any] = {"type": parts.scheme}
    for key in _ROUTING_PARAMS:
        if key in params:
            entry[key] = params.pop(key)
    cls = load_provider_class(parts.scheme)
    entry["config"] = cls.config_from_url(parts, params)
    return entry


def interpolate_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string, recursively."""
    environ = os.environ if env is None else env
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

        return _ENV.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: interpolate_env(v, environ) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [interpolate_env(v, environ) for v in value]
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"config file {p} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table/object at the top")
    return data


def load_config(source: Mapping[str, Any] | str | Path | MailerConfig) -> MailerConfig:
    """Build a validated MailerConfig from a mapping, a TOML/JSON file path, or a model."""
    if isinstance(source, MailerConfig):
        return source
    data = read_config_file(source) if isinstance(source, str | Path) else dict(source)
    data = interpolate_env(data)
    try:
        return MailerConfig.model_validate(data)
    except ValidationError as exc:
        error = ConfigError(config_error_text("mailer", exc))
    raise error  # outside the except: the pydantic error holds input values (secrets)
