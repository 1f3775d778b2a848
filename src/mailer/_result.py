"""What a send returns, and the record of each attempt behind it.

Plain dataclasses rather than pydantic models: they are built on the hot path of every
send and never parsed from untrusted input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Attempt", "SendResult"]


@dataclass(slots=True)
class Attempt:
    """One try at one provider.

    ``outcome`` is ``"sent"`` or the name of the error class (``"TransientError"``, ...),
    so attempts can be logged and counted without holding exception objects.
    """

    provider: str
    outcome: str
    duration: float = 0.0
    error: str | None = None
    code: int | None = None
    #: whether the attempt reached its commit point (the message may have been accepted
    #: from then on); None when the provider does not report it
    committed: bool | None = None
    #: whether the message may have been accepted by this attempt
    #: (:func:`mailer._errors.possibly_delivered`, decided when the attempt ended)
    possibly_delivered: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "sent"


@dataclass(slots=True)
class SendResult:
    """A provider accepted the message, or the outbox did.

    ``status`` is ``"sent"`` when a provider accepted it, ``"queued"`` when every provider
    failed before its commit point and the Mailer (``on_all_failed="enqueue"``) stored it
    in the outbox for a worker to deliver (then ``provider`` is ``"outbox"``).
    ``accepted`` lists the envelope recipients the provider took; ``rejected`` maps the
    ones it refused to its reply. A partial refusal is still a success: the accepted
    recipients must never be sent the message again.
    """

    provider: str
    message_id: str | None = None
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    #: the provider's own id for the message when it differs from the Message-ID
    provider_message_id: str | None = None
    response: str | None = None
    status: Literal["sent", "queued"] = "sent"
    #: envelope recipients left out because they are on the suppression list, each with
    #: its reason; the message went to the others (docs/suppression.md)
    suppressed: dict[str, str] = field(default_factory=dict)
