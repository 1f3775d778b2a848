"""The PostgreSQL driver, asyncpg, imported where a ``postgresql://`` store opens.

asyncpg is an optional dependency (the ``postgres`` extra): importing it at module level
would make ``import mailer`` fail without it, and a user who never names a Postgres store
should not need it. Each store that opens a pool (the outbox, the events and suppression
store) asks for it here, so the missing-driver error reads the same everywhere and names the
extra to install. It is a :class:`ConfigError` raised before any I/O, like every other
refusal of a configuration.

It imports nothing of ours but the errors, so any layer may use it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import ConfigError

__all__ = ["INSTALL", "import_asyncpg"]

#: what to run when asyncpg is missing
INSTALL = "pip install 'mailer-failover[postgres]'"


def import_asyncpg(needed_by: str) -> ModuleType:
    """The ``asyncpg`` module, or a :class:`ConfigError` saying that ``needed_by`` (such as
    "a postgresql:// outbox") needs it and how to install it."""
    try:
        return importlib.import_module("asyncpg")
    except ImportError:
        raise ConfigError(f"{needed_by} needs asyncpg: {INSTALL}") from None
