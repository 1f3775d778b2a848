"""DeliveryEvent: what a provider later tells us about a message, in one shape for all.

Every source (an ESP's webhook, an SMTP bounce, a provider's lookup API) turns what it
reads into these records, and everything after that (the event store, the suppression
list, settling ``unknown`` outbox rows, listeners, the counter) sees only them. They are
checked when built, because their fields come from untrusted input: a naive timestamp, an
unknown type or a recipient that is no address is refused here, not in the middle of
ingest.

Recipients are normalised exactly as the suppression list matches them (RFC 5321: the
local part is exact, the domain case-insensitive, in its IDNA A-label form), so an event
and a suppression entry for the same mailbox always compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import idna

__all__ = [
    "BOUNCE_KINDS",
    "EVENT_TYPES",
    "PROOF_OF_ACCEPTANCE",
    "BounceKind",
    "DeliveryEvent",
    "EventType",
    "IngestReport",
    "normalize_recipient",
]

EventType = Literal[
    "accepted",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "unsubscribed",
    "rejected",
    "opened",
    "clicked",
    "unknown",
]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
BounceKind = Literal["hard", "soft"]
BOUNCE_KINDS: frozenset[str] = frozenset(get_args(BounceKind))

#: the types that prove the provider took the message: they settle an ``unknown`` outbox
#: row to ``sent``. ``rejected`` (the provider refused it before sending) and ``unknown``
#: prove nothing, so they never settle a row.
PROOF_OF_ACCEPTANCE: frozenset[str] = frozenset(
    {
        "accepted",
        "delivered",
        "deferred",
        "bounced",
        "complained",
        "unsubscribed",
        "opened",
        "clicked",
    }
)

_MAX_ADDRESS = 320  # RFC 5321: 64 octets of local part, "@", 255 of domain
_MAX_TEXT = 1000  # ids and reasons: an ESP's text, clipped rather than refused


def normalize_recipient(address: str) -> str:
    """The form the suppression list matches on: ``Local@Example.COM`` ->
    ``Local@example.com``, ``user@bücher.example`` -> ``user@xn--bcher-kva.example``.

    Angle brackets and surrounding whitespace are dropped (DSNs write ``<a@b>``). The local
    part is kept exactly (RFC 5321 section 2.4: only the receiving host may interpret it).
    Raises ValueError, naming the problem but not echoing more than the address itself.
    """
    if not isinstance(address, str):
        raise ValueError(f"a recipient must be a string, not {type(address).__name__}")
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if len(text) > _MAX_ADDRESS or any(ord(c) < 33 or c == "\x7f" for c in text):
        raise ValueError(
            "a recipient address holds whitespace or control characters, or is too long"
        )
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"a recipient must be local@domain: {text[:80]!r}")
    domain = domain.rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        return f"{local}@{domain.lower()}"
    try:
        ascii_domain = domain if domain.isascii() else idna.encode(domain, uts46=True).decode()
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"a recipient's domain is not a valid IDNA name ({exc})") from None
    return f"{local}@{ascii_domain.lower()}"


def _clip(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"DeliveryEvent.{what} must be a string or None")
    return value[:_MAX_TEXT]


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One thing a provider reported about one recipient of one message.

    ``message_id`` is exactly the :attr:`SendResult.message_id` of the send it belongs
    to, or None when it cannot be matched (ingest then looks it up from
    ``provider_message_id``). ``event_id`` is the provider's own id for the event: a
    second event with the same ``(provider, event_id)`` is a duplicate and is dropped.
    ``raw`` is the provider's event as parsed JSON, kept for the user, never logged.
    """

    type: EventType
    provider: str
    recipient: str
    timestamp: datetime
    message_id: str | None = None
    provider_message_id: str | None = None
    bounce: BounceKind | None = None
    reason: str | None = None
    event_id: str | None = None
    raw: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(
                f"DeliveryEvent.type must be one of {sorted(EVENT_TYPES)}, not {self.type!r}"
            )
        if not isinstance(self.provider, str) or not self.provider:
            raise ValueError("DeliveryEvent.provider must be the provider's name")
        if self.bounce is not None and self.bounce not in BOUNCE_KINDS:
            raise ValueError(
                f"DeliveryEvent.bounce must be 'hard', 'soft' or None, not {self.bounce!r}"
            )
        if self.bounce is not None and self.type != "bounced":
            raise ValueError("DeliveryEvent.bounce is only for type 'bounced'")
        if not isinstance(self.timestamp, datetime):
            raise ValueError("DeliveryEvent.timestamp must be a datetime")
        offset = self.timestamp.utcoffset()
        if offset is None:
            raise ValueError("DeliveryEvent.timestamp must be timezone-aware (UTC); it is naive")
        set_ = object.__setattr__  # frozen: normalise in place, once
        if offset != timedelta(0):
            set_(self, "timestamp", self.timestamp.astimezone(UTC))
        set_(self, "recipient", normalize_recipient(self.recipient))
        for name in ("message_id", "provider_message_id", "reason", "event_id"):
            set_(self, name, _clip(getattr(self, name), name))
        if self.message_id is not None:
            set_(self, "message_id", _bare_message_id(self.message_id))

    @property
    def suppression_key(self) -> str:
        """``"bounced:hard"``, ``"bounced:soft"`` or the type: what the ``suppression.on``
        list names."""
        return f"bounced:{self.bounce}" if self.type == "bounced" and self.bounce else self.type


def _bare_message_id(value: str) -> str | None:
    """``<abc@host>`` and ``abc@host`` name the same message: keep the form
    :attr:`SendResult.message_id` has (with angle brackets), whichever a source gives."""
    core = value.strip().strip("<>").strip()
    return f"<{core}>" if core else None


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one :meth:`Mailer.ingest_events` call did.

    ``new`` events were stored and applied; ``duplicates`` had a ``(provider, event_id)``
    already stored and were dropped; ``suppressed`` lists the addresses this batch added
    to the suppression list; ``settled`` the Message-IDs whose ``unknown`` outbox row it
    settled to ``sent``.
    """

    new: int = 0
    duplicates: int = 0
    suppressed: tuple[str, ...] = ()
    settled: tuple[str, ...] = ()
