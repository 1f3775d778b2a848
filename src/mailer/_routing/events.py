"""What listeners (``Mailer.subscribe``) receive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .._errors import DeliveryError
    from .._result import Attempt, SendResult
    from .health import BreakerState

__all__ = ["Event", "EventKind"]

EventKind = Literal["start", "attempt", "failover", "sent", "failed", "breaker"]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. ``kind`` says which of the optional fields are set.

    Every ``Mailer.send`` emits one ``start``, then its attempts and failovers, then
    exactly one ``sent`` or ``failed`` (a cancelled send, or one stopped by a message
    problem, is ``failed`` too, with the error that ended it). ``send_id`` ties the
    events of one call together (two sends of the same message have different ids);
    it is None on ``breaker`` events, which belong to no send.
    """

    kind: EventKind
    provider: str | None = None
    message_id: str | None = None
    attempt: Attempt | None = None
    error: DeliveryError | None = None
    result: SendResult | None = None
    next_provider: str | None = None
    old_state: BreakerState | None = None
    new_state: BreakerState | None = None
    send_id: int | None = None
