"""The ``mailer`` command, one module per command or command group (``send``, ``verify``,
``health``, ``providers``, ``doctor``, ``docs``, ``demo``, ``outbox`` with ``worker``,
``suppression`` with ``events``, ``bounces``), all
registered on the one Typer app of :mod:`.common`, which also holds what they share (exit
codes, consoles, error rendering). The commands render; the work stays in the library.

Importing this package assembles the whole command: the order of the imports below is the
order of ``mailer --help``. Nothing in the library imports this package (the import-graph
check of ``make lint`` keeps it so); only ``python -m mailer`` and the console script do.
"""

from . import send, verify, health, providers, doctor, docs, demo, outbox  # noqa: I001, F401
from . import suppression, bounces  # noqa: F401
from .common import app
from .root import main

__all__ = ["app", "main"]
