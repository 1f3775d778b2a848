"""Delivery events and the suppression list (docs/events.md, docs/suppression.md).

One concept a module: ``model`` (DeliveryEvent, IngestReport, address matching),
``config`` (the ``suppression`` and ``events`` blocks), ``store`` (the protocols),
``memory``/``sqlite``/``postgres``/``redis`` (the backends), ``backends`` (one per URL),
``suppression`` (the list and its local copy), ``hub`` (ingest, listeners, the sends'
records), ``bounces`` (RFC 3464 DSNs and RFC 5965 ARF reports), ``blocking`` (the
suppression API for SyncMailer).
"""

from __future__ import annotations

from .config import EventsConfig, SuppressionConfig
from .hub import DeliveryHub
from .model import EVENT_TYPES, DeliveryEvent, IngestReport, normalize_recipient
from .store import SuppressionEntry
from .suppression import Suppression

__all__ = [
    "EVENT_TYPES",
    "DeliveryEvent",
    "DeliveryHub",
    "EventsConfig",
    "IngestReport",
    "Suppression",
    "SuppressionConfig",
    "SuppressionEntry",
    "normalize_recipient",
]
