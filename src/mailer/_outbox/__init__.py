"""The durable outbox: messages stored before they are sent, delivered by workers that
record each attempt and its commit point, so nothing is lost when every provider is down
and nothing is sent twice when a worker dies (see docs/outbox.md).

Built by the Mailer from its ``outbox`` option; ``mailer.outbox`` is the :class:`Outbox`.
"""

from __future__ import annotations

from .config import BackoffConfig, OutboxConfig, parse_duration
from .store import STATES, OutboxItem, OutboxStore, State
from .worker import Outbox

__all__ = [
    "STATES",
    "BackoffConfig",
    "Outbox",
    "OutboxConfig",
    "OutboxItem",
    "OutboxStore",
    "State",
    "parse_duration",
]
