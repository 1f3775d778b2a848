"""The ``mailer.providers`` entry-point group, read and loaded in one place.

It sits below :mod:`._provider`: a provider asks it whether a key of
``Message.provider_options`` names its own type, and :mod:`._plugins` (which checks that
what loads is a Provider and words the errors) builds on it. Neither of them imports the
other, so the interface does not depend on the registry.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "mailer.providers"

_loaded: dict[str, Any] = {}


class UnknownType(LookupError):
    """No installed distribution declares this type name."""


def by_name() -> dict[str, EntryPoint]:
    """Every entry point of the group by type name; on a name clash the first one found
    wins (``discover`` reports the others)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def load(type_name: str) -> Any:
    """What the entry point ``type_name`` names, loaded once and then remembered.

    Raises UnknownType when no installed distribution declares it, and whatever importing
    it raises when it fails to load (a failure is not remembered: it is tried again).
    """
    if type_name in _loaded:
        return _loaded[type_name]
    ep = by_name().get(type_name)
    if ep is None:
        raise UnknownType(type_name)
    _loaded[type_name] = obj = ep.load()
    return obj
