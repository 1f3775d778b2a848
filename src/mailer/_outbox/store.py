"""What an outbox store does, whatever the database: the protocol and its records.

A store keeps one row per message (keyed by its Message-ID) and moves it through the
states below. Every method is one short transaction, committed before it returns; no
transaction is ever held open while a message is being sent.

::

    queued --claim--> sending --+--> sent                 a provider accepted it
                 (leased by one |--> failed               refused for good (PermanentError)
                  worker, kept  |--> unknown              may have been delivered
                  alive by its  |--> queued (next_at)     nothing delivered: try later
                  heartbeat)    +--> dead                 past max_attempts or max_age

A claim whose lease runs out (its worker died) goes back to ``queued`` when the worker
had not recorded crossing a commit point, else to ``unknown``: the database alone decides,
so a restarted worker, or any other, recovers it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args

if TYPE_CHECKING:
    from ._chunked import StoredPart

__all__ = [
    "STATES",
    "Claimed",
    "NewMessage",
    "OutboxItem",
    "OutboxStore",
    "Outcome",
    "State",
    "Stored",
]

State = Literal["queued", "sending", "sent", "failed", "unknown", "dead"]
STATES: tuple[State, ...] = get_args(State)

#: the error recorded when a claim expires before its worker recorded a commit point
LEASE_EXPIRED_SAFE = "the worker's lease expired before any commit point: queued again"
#: ... and after it: the message may have been delivered
LEASE_EXPIRED_UNKNOWN = (
    "the worker's lease expired after it recorded crossing a commit point: "
    "the message may have been delivered"
)
MAX_AGE_PASSED = "max_age passed before the message could be delivered"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: its JSON and the bytes it was rendered to (for a large
    message, a manifest and its large attachments in ``parts``: see :mod:`._chunked`)."""

    message_id: str
    message_json: bytes
    raw: bytes
    #: when it may first be tried (time.time()); now, unless it was queued after failing
    next_at: float
    #: tries already made (1 when a send failed and queued it)
    attempts: int = 0
    last_error: str | None = None
    #: :func:`._load.seal` of ``message_json``: lets a worker skip validating it again
    digest: bytes | None = None
    #: large attachments, written in chunks in the transaction that adds the row
    parts: tuple[StoredPart, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message leased to one worker: ``claim`` proves the lease in every later write."""

    row: int
    claim: str
    message_id: str
    message_json: bytes
    raw: bytes | None
    #: tries so far, this one included
    attempts: int
    created: float
    #: the only provider this message may go to: an idempotent one (Resend) that may
    #: have accepted it already, where a re-send with the same key cannot duplicate it
    pin: str | None = None
    #: the claim itself recorded the commit point (``claim(commit=True)``): the attempt
    #: crosses without a write of its own, while the worker's lease holds
    committed: bool = False
    #: the seal stored with the JSON (None: a row without one, validated in full)
    digest: bytes | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A row's message as it is stored (what :func:`._chunked.loaded` reads): for
    ``mailer outbox reconcile``, which compares it with a provider's record."""

    row: int
    message_json: bytes
    raw: bytes | None
    #: the seal stored with the JSON (None: validated in full, as reconcile does)
    digest: bytes | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a claimed message goes after its attempt."""

    state: State
    next_at: float | None = None
    provider: str | None = None
    error: str | None = None
    #: queued again, but only for this provider (see :attr:`Claimed.pin`)
    pin: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One row, as ``list`` shows it (no message content)."""

    message_id: str
    state: State
    attempts: int
    created: float
    updated: float
    next_at: float
    provider: str | None
    last_error: str | None
    #: the current (or last) attempt recorded crossing a commit point
    committed: bool
    #: the only provider it may be sent through (see :attr:`Claimed.pin`)
    pin: str | None = None

    #: the columns, in order, that :meth:`from_row` reads (every store selects these)
    COLUMNS: ClassVar[str] = (
        "message_id, state, attempts, created, updated, next_at, provider, last_error, committed,"
        " pin"
    )

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> OutboxItem:
        return cls(
            message_id=r[0],
            state=r[1],
            attempts=r[2],
            created=r[3],
            updated=r[4],
            next_at=r[5],
            provider=r[6],
            last_error=r[7],
            committed=bool(r[8]),
            pin=r[9],
        )


class OutboxStore(Protocol):
    """The storage a worker needs. Implementations: SQLiteStore, PostgresStore."""

    async def open(self) -> None:
        """Create the schema if needed. Idempotent."""

    async def close(self) -> None: ...

    async def add(self, item: NewMessage) -> bool:
        """Store a message, committed on return. False when its Message-ID is already
        stored (the stored one is kept: a Message-ID names one message). The item's
        ``parts`` are written in the same transaction."""

    async def read_chunk(self, row: int, part: int, seq: int) -> bytes | None:
        """Chunk ``seq`` of large attachment ``part`` of row ``row``; None past the
        last (see :mod:`._chunked`)."""

    async def claim(
        self, owner: str, limit: int, *, lease: float, max_age: float, commit: bool = False
    ) -> list[Claimed]:
        """Lease up to ``limit`` due messages to ``owner`` and count the attempt.

        Also settles expired leases (queued or unknown, by the commit flag) and moves
        queued messages older than ``max_age`` to dead. Several workers never get the
        same message.

        ``commit``: the same transaction records the commit point of every row it leases
        (``committed``, durably, and ``provider`` reset to the row's pin or NULL), so
        their attempts need no write of their own before crossing it; a lease that
        expires then ends in ``unknown``. See :mod:`._commit`.
        """

    async def mark_committing(self, row: int, claim: str, provider: str | None) -> bool:
        """Record that the attempt is about to cross a commit point. False when the
        claim was lost (its lease expired): the caller must then not cross."""

    async def finish(self, row: int, claim: str, outcome: Outcome) -> bool:
        """Record the attempt's outcome. False when the claim was lost."""

    async def renew(self, owner: str, *, lease: float) -> int:
        """Extend every lease ``owner`` holds (the heartbeat). Returns how many."""

    async def next_due(self) -> float | None:
        """When the earliest queued message is due (time.time()), or None."""

    async def stats(self) -> dict[str, int]:
        """Messages per state, every state present."""

    async def items(self, state: State | None = None, limit: int = 100) -> list[OutboxItem]:
        """Rows, oldest first."""

    async def retry(self, message_ids: list[str]) -> int:
        """Queue these messages again, due now, whatever their state (except sending).
        Returns how many were."""

    async def settle(self, message_id: str, provider: str, note: str) -> bool:
        """Move the message's row from ``unknown`` to ``sent`` (a delivery event proved
        that ``provider`` took it), keeping ``note`` as its last word. False when the
        row is not ``unknown`` (or not there): only ``unknown`` is ever settled."""

    async def content(self, message_id: str) -> Stored | None:
        """The message as stored (its JSON and ``raw``, as :class:`NewMessage` had
        them), None when there is no such row. ``mailer outbox reconcile`` compares it
        with a provider's record where the provider cannot be searched by our key
        (Resend); a chunked row's large texts are read from its chunks then."""

    async def purge(self, state: State, older_than: float) -> int:
        """Delete messages in ``state`` not updated for ``older_than`` seconds (and
        their chunks)."""
