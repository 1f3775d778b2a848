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
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from ._events.config import EventsConfig, SuppressionConfig
from ._options import resolve_paths, validation_text
from ._outbox.config import OutboxConfig
from ._redact import redact
from ._routing.budget import BudgetConfig
from ._routing.group import GROUPS
from ._routing.health import HealthConfig
from ._routing.runtime import RetryConfig
from ._templates import TemplatesConfig
from ._unsubscribe import UnsubscribeConfig

__all__ = [
    "GROUP_TYPES",
    "MailerConfig",
    "ProviderEntry",
    "RetryConfig",
    "config_url",
    "interpolate_dsn",
    "load_config",
    "load_model_config",
    "load_outbox_config",
    "parse_dsn",
]

M = TypeVar("M", bound=BaseModel)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ROUTING_PARAMS = ("priority", "weight", "name", "enabled")


#: provider types that are groups of other providers (:mod:`mailer._routing.group`)
GROUP_TYPES = tuple(GROUPS)


class ProviderEntry(BaseModel):
    """One ``[[providers]]`` entry: which type, its routing, and its own config.

    A group (``type = "failover" | "weighted" | "roundrobin"``) has ``providers``, its
    children (entries or DSN strings, groups included), and ``weights`` instead of a
    ``config``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = None
    priority: int | None = None
    weight: float = Field(default=1.0, gt=0)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    providers: list[ProviderEntry] | None = None
    weights: list[float] | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_.+-]*", value):
            raise ValueError("provider type must be lowercase letters, digits, '_', '-'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _rate_limit(cls, data: Any) -> Any:
        """``rate_limit`` may sit on the entry (beside priority) or in its config: it is
        the provider's option either way (see mailer._routing.ratelimit)."""
        if not isinstance(data, Mapping) or "rate_limit" not in data:
            return data
        data = dict(data)
        limit = data.pop("rate_limit")
        if data.get("type") in GROUP_TYPES:
            raise ValueError("rate_limit belongs on a provider, not on a group")
        config = data.get("config") or {}
        if not isinstance(config, Mapping):
            return data  # reported as the wrong type
        if {"rate_limit", "rateLimit", "rateDelta"} & set(config):
            raise ValueError("rate_limit is given both on the entry and in its config; give one")
        data["config"] = {**config, "rate_limit": limit}
        return data

    @field_validator("providers", mode="before")
    @classmethod
    def _child_dsns(cls, value: Any) -> Any:
        return _parse_dsns(value)

    @model_validator(mode="after")
    def _group(self) -> ProviderEntry:
        if self.type in GROUP_TYPES:
            if not self.providers:
                raise ValueError(f"a {self.type} group needs a non-empty 'providers' list")
            if self.config:
                raise ValueError(f"a {self.type} group takes 'providers', not 'config'")
            if self.weights is not None and len(self.weights) != len(self.providers):
                raise ValueError("a group needs one weight per provider")
        elif self.providers is not None or self.weights is not None:
            raise ValueError(
                f"'providers' and 'weights' belong to groups ({', '.join(GROUP_TYPES)}), "
                f"not to a {self.type!r} provider"
            )
        return self


class MailerConfig(BaseModel):
    """The whole Mailer configuration (see docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: settings-table names of an SMTP login pasted at the top (lower-cased)
    option_moves: ClassVar[Mapping[str, str]] = {
        "username": "providers[].config.auth.user",
        "user": "providers[].config.auth.user",
        "password": "providers[].config.auth.password",
        "pass": "providers[].config.auth.password",
    }

    providers: list[ProviderEntry] = Field(min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    on_uncertain: Literal["raise", "failover"] = "raise"
    send_timeout: float = Field(default=60.0, gt=0)
    health: HealthConfig = Field(default_factory=HealthConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    #: the durable outbox (docs/outbox.md): a URL or a table; None: no outbox
    outbox: OutboxConfig | None = None
    on_all_failed: Literal["raise", "enqueue"] = "raise"
    #: local templates (docs/templates.md): ``{"dir": "templates/"}``; None: none
    templates: TemplatesConfig | None = None
    #: one-click unsubscribe (docs/deliverability.md): base_url, key, mailto, max_age
    unsubscribe: UnsubscribeConfig | None = None
    #: the suppression list (docs/suppression.md): a store URL or a table
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    #: delivery events' storage and retention (docs/events.md)
    events: EventsConfig = Field(default_factory=EventsConfig)

    @field_validator("providers", mode="before")
    @classmethod
    def _dsns(cls, value: Any) -> Any:
        return _parse_dsns(value)

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


_DSN_ENCODE_HINT = (
    "if the user or password holds '/', '@', ':', '#', '?' or '%', percent-encode it "
    "(%2F, %40, %3A, %23, %3F, %25), or pass it as ${VAR}, which is encoded for you"
)


def _parse_dsns(value: Any) -> Any:
    """A providers list may mix entries and DSN strings: parse the strings."""
    if isinstance(value, list):
        return [parse_dsn(v) if isinstance(v, str) else v for v in value]
    return value


def parse_dsn(url: str) -> dict[str, Any]:
    """Split a DSN into a provider entry; the provider type turns the rest into config.

    ``resend://re_123@default?priority=3`` -> type "resend", priority 3, and whatever
    ``ResendProvider.config_from_url`` makes of the key. Routing parameters (priority,
    weight, name, enabled) are taken out of the query here, for every type alike.

    Errors never echo any part of the DSN but its scheme: a DSN carries credentials, and
    a mistyped one puts them where a host or port should be (urllib's own port error
    quotes the password).
    """
    from ._plugins import load_provider_class

    group = _GROUP_DSN.fullmatch(url.strip())
    if group is not None:
        return {"type": group.group(1), "providers": _split_group(group.group(2))}
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ConfigError(
            "a provider DSN starts with its type and '://', like smtp://, smtps:// or "
            "resend://; this one has no scheme"
        )
    error: ConfigError | None = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError (quoting the text) when not a number
    except ValueError:
        error = ConfigError(f"the {scheme}:// DSN has an invalid host or port; {_DSN_ENCODE_HINT}")
    if error is not None:
        raise error  # outside the except: urllib's ValueError quotes the password
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    entry: dict[str, Any] = {"type": parts.scheme}
    for key in _ROUTING_PARAMS:
        if key in params:
            entry[key] = params.pop(key)
    cls = load_provider_class(parts.scheme)
    try:
        entry["config"] = cls.config_from_url(parts, params)
    except ValueError:
        error = ConfigError(f"the {scheme}:// DSN cannot be read; {_DSN_ENCODE_HINT}")
    else:
        return entry
    raise error  # outside the except: the ValueError may quote a secret


def interpolate_dsn(template: str, env: Mapping[str, str] | None = None) -> str:
    """``${VAR}`` in a DSN string, percent-encoding what lands in the user or password.

    A raw substitution would let a password holding '/', '@', '#' or '?' end the user-info
    early and silently rewrite the host and port, dropping auth (``SMTP_PASSWORD=2525/xyz``
    once built a provider for host ``mailuser``, port 2525, no auth). The user-info is found
    in the template, before substitution, so a value can never move its boundaries.
    """
    group = _GROUP_DSN.fullmatch(template.strip())
    if group is not None:  # failover(a b): each member is a DSN of its own
        members = " ".join(interpolate_dsn(m, env) for m in _split_group(group.group(2)))
        return f"{group.group(1)}({members})"
    scheme, sep, rest = template.partition("://")
    if not sep:
        return _ENV.sub(lambda m: _env_value(m, env), template)
    # the authority ends at the first '/', '?' or '#' outside ${...} (a default may hold one)
    masked = _ENV.sub(lambda m: "x" * len(m.group(0)), rest)
    ends = [i for i in (masked.find(c) for c in "/?#") if i >= 0]
    at = masked.rfind("@", 0, min(ends, default=len(rest)))
    head, tail = (rest[:at], rest[at:]) if at >= 0 else ("", rest)
    userinfo = _ENV.sub(lambda m: quote(_env_value(m, env), safe=""), head)
    plain = _ENV.sub(lambda m: _env_value(m, env), f"{scheme}://\0{tail}")
    return plain.replace("\0", userinfo, 1)


def _env_value(m: re.Match[str], env: Mapping[str, str] | None) -> str:
    environ = os.environ if env is None else env
    name, default = m.group(1), m.group(2)
    if name in environ:
        return environ[name]
    if default is not None:
        return default
    raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")


_GROUP_DSN = re.compile(rf"({'|'.join(GROUP_TYPES)})\((.*)\)", re.DOTALL)


def _split_group(inner: str) -> list[str]:
    """``a b(c d) e`` -> ``["a", "b(c d)", "e"]``: whitespace outside parentheses."""
    items: list[str] = []
    depth, start = 0, None
    for i, ch in enumerate(inner + " "):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError("unbalanced parentheses in a group DSN")
        if ch.isspace() and depth == 0:
            if start is not None:
                items.append(inner[start:i])
                start = None
        elif start is None:
            start = i
    if depth != 0:
        raise ConfigError("unbalanced parentheses in a group DSN")
    if not items:
        raise ConfigError("a group DSN needs at least one provider: failover(a b)")
    return items


def interpolate_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string, recursively."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: _env_value(m, env), value)
    if isinstance(value, Mapping):
        return {k: interpolate_env(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [interpolate_env(v, env) for v in value]
    return value


#: ``scheme://`` (or ``scheme:/``, which is what ``Path`` makes of it) starting a "path"
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # two letters at least: not C:/


def config_url(source: object) -> str | None:
    """The provider URL (DSN) when ``source`` is one rather than a file path, else None.

    Nodemailer users write ``createTransport("smtps://user:pass@host")``, so a URL is
    accepted wherever a config is: ``SyncMailer(url)``, ``Mailer.from_config(url)``,
    ``--config URL``, ``MAILER_CONFIG=URL`` and the framework settings. ``Path`` (the
    CLI's option type) turns ``smtp://`` into ``smtp:/``: the slashes are restored. An
    existing file of that name stays a file.
    """
    if not isinstance(source, str | Path):
        return None
    text = str(source).strip()
    if _GROUP_DSN.fullmatch(text):
        return text
    if not _URL_LIKE.match(text) or Path(text).exists():
        return None
    scheme, _, rest = text.partition(":")
    return f"{scheme}://{rest.lstrip('/')}" if isinstance(source, Path) else text


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a TOML or JSON file, or ``{"providers": [url]}`` for a provider
    URL; errors never echo a connection URL's secrets."""
    url = config_url(path)
    if url is not None:
        return {"providers": [url]}
    text = str(path)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {redact(text)}: {exc.strerror}") from None
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


def _interpolate_dsns(entry: Any) -> Any:
    """DSN strings first, in groups too, with their user-info percent-encoded."""
    if isinstance(entry, str):
        return interpolate_dsn(entry)
    if isinstance(entry, Mapping) and isinstance(entry.get("providers"), list):
        return {**entry, "providers": [_interpolate_dsns(p) for p in entry["providers"]]}
    return entry


def _paths_from_file(entry: Any, base: Path) -> Any:
    """Relative paths in provider configs (groups too) resolved against ``base``."""
    from ._plugins import load_provider_class

    if not isinstance(entry, Mapping):
        return entry
    if isinstance(entry.get("providers"), list):
        entry = {**entry, "providers": [_paths_from_file(p, base) for p in entry["providers"]]}
    kind, config = entry.get("type"), entry.get("config")
    if isinstance(kind, str) and kind not in GROUP_TYPES and isinstance(config, Mapping):
        try:
            model = load_provider_class(kind).Config
        except ConfigError:
            return entry  # reported, with its hint, when the entry is validated
        entry = {**entry, "config": resolve_paths(model, config, base)}
    return entry


def _one_provider(data: dict[str, Any]) -> dict[str, Any]:
    """A config block pasted alone, as one provider, with the Mailer's own keys kept.

    Nodemailer's transport object (``{host, port, secure, auth}``) and NexoMailer's
    ``config: {...}`` block are SMTP settings; NexoMailer's ``{type, config}`` is one
    entry of ``providers``. Whatever is not a Mailer option (retry, outbox, ...) goes to
    the provider, which names any key it does not know, with its suggestion.
    """
    if "providers" in data:
        return data
    top = {k: v for k, v in data.items() if k in MailerConfig.model_fields}
    rest = {k: v for k, v in data.items() if k not in MailerConfig.model_fields}
    if isinstance(rest.get("type"), str) and isinstance(rest.get("config"), Mapping):
        return {**top, "providers": [rest]}  # one entry of NexoMailer's providers
    if set(rest) == {"config"} and isinstance(rest["config"], Mapping):
        rest = dict(rest["config"])  # NexoMailer's config block, still in its wrapper
    if "host" in rest:
        return {**top, "providers": [{"type": "smtp", "config": rest}]}
    return data


def load_config(source: Mapping[str, Any] | str | Path | MailerConfig) -> MailerConfig:
    """Build a validated MailerConfig from a mapping, a TOML/JSON file path, or a model."""
    if isinstance(source, MailerConfig):
        return source
    data = read_config_file(source) if isinstance(source, str | Path) else dict(source)
    data = _one_provider(data)
    data = _interpolate_dsns(data)
    data = interpolate_env(data)
    if isinstance(source, str | Path) and config_url(source) is None:
        data = _paths_from_file(data, Path(source).resolve().parent)
    try:
        return MailerConfig.model_validate(data)
    except ValidationError as exc:
        error = ConfigError(validation_text("config for mailer", exc, MailerConfig))
    raise error  # outside the except: the pydantic error holds input values (secrets)


def load_outbox_config(source: Mapping[str, Any] | str) -> OutboxConfig:
    """The ``outbox`` option given to the Mailer directly: a URL or a mapping."""
    try:
        return OutboxConfig.model_validate(source)
    except ValidationError as exc:
        error = ConfigError(validation_text("config for outbox", exc, OutboxConfig))
    raise error  # outside the except: the pydantic error holds input values (a password)


def load_model_config(cls: type[M], source: Any, what: str) -> M:
    """A config block given to the Mailer directly (``suppression=``, ``events=``): the
    model itself, a mapping, a URL string where the block takes one, or None (defaults)."""
    if isinstance(source, cls):
        return source
    try:
        return cls.model_validate(source if source is not None else {})
    except ValidationError as exc:
        error = ConfigError(validation_text(f"config for {what}", exc, cls))
    raise error  # outside the except: the pydantic error holds input values (a password)
