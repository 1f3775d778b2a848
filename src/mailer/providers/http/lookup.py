"""Asking a provider about one message: the lookup ``mailer outbox reconcile`` uses.

An ``unknown`` outbox row is a send whose answer was lost after the commit point. Only the
provider knows whether it took the message. :meth:`HTTPProvider.lookup` asks it by our
Message-ID, which is possible only where the ESP can search by the correlation key
(mailer.providers.http.correlation). The answer is one of three verdicts. ``sent``: the
provider's record has the message. ``absent``: the provider's own record proves it never
arrived, so sending again cannot duplicate it. ``unknown``: anything else (no lookup API,
an error, a search that may not have caught up yet). Only ``absent`` re-queues, so when
in doubt the answer is ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ABSENT_AFTER", "Lookup", "Verdict"]

Verdict = Literal["sent", "absent", "unknown"]

#: a search finding nothing proves absence only for a row this old (seconds): an ESP's
#: search index lags its API by seconds to minutes
ABSENT_AFTER = 900.0


@dataclass(frozen=True)
class Lookup:
    """A provider's answer about one message; ``detail`` says why, for the log."""

    verdict: Verdict
    detail: str
    provider_message_id: str | None = None
