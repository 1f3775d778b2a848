"""The task engines' side of ``mailer outbox``: per-engine counts for ``status``, and
``mailer outbox sweep`` (publish again the tasks that were lost) for a cron job where
the engine has no scheduler of its own (RQ, django.tasks). docs/task-queues.md."""

from __future__ import annotations

from rich.table import Table

from .._outbox.store import STATES

__all__ = ["dispatch_table"]


def dispatch_table(engines: dict[str, dict[str, int]]) -> Table:
    """Per engine: rows handed to it, tasks published (a retry or a sweep publishes
    again), and those rows by state now."""
    table = Table("engine", "rows", "tasks published", *STATES)
    for engine, counts in sorted(engines.items()):
        table.add_row(
            engine,
            str(counts["rows"]),
            str(counts["published"]),
            *(str(counts.get(state, 0)) for state in STATES),
        )
    return table
