"""The ``mailer`` command: :mod:`.commands` holds the core commands and the shared helpers,
:mod:`.outbox` the outbox's (``worker``, ``outbox ...``), which register on the same app.
Importing this package assembles the whole command."""

from . import outbox as _outbox  # noqa: F401 - registers its commands on ``app``
from .commands import app, main

__all__ = ["app", "main"]
