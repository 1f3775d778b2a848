"""SMTP bounces and complaint reports as delivery events.

``mailer.bounces.parse(raw)`` reads an RFC 3464 delivery status notification (as Postfix,
Exim and Gmail send them) or an RFC 5965 ARF complaint report and returns its
:class:`~mailer.DeliveryEvent` list; ``await mailer.ingest_bounce(raw)`` stores and applies
them (docs/events.md, "SMTP bounces").
"""

from __future__ import annotations

from ._events.bounces import MAX_REPORT_BYTES, parse

__all__ = ["MAX_REPORT_BYTES", "parse"]
