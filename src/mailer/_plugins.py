"""Provider discovery through the ``mailer.providers`` entry-point group.

Built-in providers are declared in our own pyproject under the same group, so there is
one path to a provider, not two. A plugin that fails to import is recorded with its error
and does not stop the others from loading.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from . import _entry_points
from ._errors import ConfigError
from ._log import get_logger
from ._options import close_names
from ._provider import Provider

__all__ = ["PluginInfo", "discover", "load_provider_class"]

GROUP = _entry_points.GROUP
log = get_logger("mailer.plugins")


@dataclass(frozen=True)
class PluginInfo:
    """One entry point: the type name, where it comes from, and whether it loads."""

    type: str
    target: str
    distribution: str | None
    version: str | None
    error: str | None = None
    provider_class: builtins.type[Provider] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _checked(obj: object, ep: EntryPoint) -> type[Provider]:
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise TypeError(f"{ep.value} is not a mailer.Provider subclass")
    return obj


def load_provider_class(type_name: str) -> type[Provider]:
    """The Provider class for a type name, or a ConfigError that says what to install."""
    try:
        obj = _entry_points.load(type_name)
        if isinstance(obj, type) and issubclass(obj, Provider):
            return obj  # the common case, without reading the entry points again
        return _checked(obj, _entry_points.by_name()[type_name])
    except _entry_points.UnknownType:
        pass
    except Exception as exc:
        ep = _entry_points.by_name().get(type_name)
        dist = ep.dist.name if ep is not None and ep.dist is not None else "an unknown package"
        raise ConfigError(
            f"provider type {type_name!r} (from {dist}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    installed = sorted(_entry_points.by_name())
    near = close_names(type_name, installed)
    known = ", ".join(installed) or "none"
    if near:
        raise ConfigError(
            f"unknown provider type {type_name!r}; did you mean {near[0]!r}? "
            f"(if not: pip install mailer-{type_name}; installed types: {known})"
        )
    raise ConfigError(
        f"unknown provider type {type_name!r}; pip install mailer-{type_name} "
        f"(installed types: {known})"
    )


def discover() -> list[PluginInfo]:
    """Every provider entry point, loaded, each with its error if it failed to load."""
    infos = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        try:
            cls: type[Provider] | None = _checked(ep.load(), ep)
            error = None
        except Exception as exc:
            log.warning("provider plugin %r from %s failed to load: %s", ep.name, dist, exc)
            cls, error = None, f"{type(exc).__name__}: {exc}"
        infos.append(PluginInfo(ep.name, ep.value, dist, version, error, cls))
    return infos
