"""``mailer outbox reconcile``: settle ``unknown`` rows by asking the provider.

For each ``unknown`` row (oldest first) the provider it went through is asked about the
message (:meth:`HTTPProvider.lookup`), with the row's creation time and its stored
content for a provider that can only be searched by content (Resend). ``sent`` settles
the row, as a delivery event would. ``absent`` (the provider's own record proves the
message never arrived) re-queues it. ``unknown`` leaves it for a person or a later run.
A provider without a lookup, an error or a timeout is ``unknown``: this never re-queues
on a guess.

A row with no provider recorded (its worker died after a claim that recorded the commit
point, before any result: ``commit_record``, docs/outbox.md) is asked of every provider
with a lookup: one that says ``sent`` settles it; it is ``absent`` only when every one of
them says so (and there is at least one).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from .._errors import DeliveryError, MessageError
from .._log import get_logger
from .._message import Message
from . import _chunked
from .store import OutboxItem
from .worker import Outbox

#: as mailer.providers.http.lookup.ABSENT_AFTER (not imported here: `import mailer` does
#: not load httpx, and the lookup module's package does)
ABSENT_AFTER = 900.0

__all__ = ["ReconcileReport", "reconcile"]

log = get_logger("mailer.outbox")


@dataclass
class ReconcileReport:
    """Message-IDs per outcome."""

    settled: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


async def reconcile(
    outbox: Outbox,
    providers: Sequence[Any],
    *,
    limit: int = 1000,
    absent_after: float = ABSENT_AFTER,
) -> ReconcileReport:
    """Ask, then settle, re-queue or leave each ``unknown`` row (at most ``limit``)."""
    from ..providers.http.lookup import Lookup  # here: see ABSENT_AFTER

    by_name = {p.name: p for p in providers}
    askable = [p for p in providers if callable(getattr(p, "lookup", None))]
    report = ReconcileReport()
    for item in await outbox.items("unknown", limit):
        if item.provider is None:
            name, answer = await _ask_all(outbox, item, askable)
        else:
            name = item.provider
            provider = by_name.get(item.provider)
            answer = Lookup("unknown", f"no provider named {item.provider!r} in the config")
            if provider is not None and callable(getattr(provider, "lookup", None)):
                answer = await _ask(outbox, item, provider)
        if answer.verdict == "sent" and await outbox.settle(
            item.message_id, str(name), time.time()
        ):
            report.settled.append(item.message_id)
        elif answer.verdict == "absent" and time.time() - item.updated >= absent_after:
            if await outbox.retry(item.message_id):
                report.requeued.append(item.message_id)
        else:
            report.left.append(item.message_id)
        log.info(
            "reconcile %s via %s: %s (%s)",
            item.message_id,
            name,
            answer.verdict,
            answer.detail,
            extra={
                "event": "reconcile",
                "message_id": item.message_id,
                "provider": name,
                "verdict": answer.verdict,
            },
        )
    return report


async def _ask(outbox: Outbox, item: OutboxItem, provider: Any) -> Any:
    """One provider's :class:`Lookup` for the row (an error reads as ``unknown``)."""
    from ..providers.http.lookup import Lookup  # here: see ABSENT_AFTER

    try:
        async with _message(outbox, item.message_id) as message:
            return await provider.lookup(
                item.message_id,
                age=time.time() - item.updated,
                created=item.created,
                message=message,
            )
    except DeliveryError as exc:
        return Lookup("unknown", f"the lookup failed: {type(exc).__name__}")


async def _ask_all(
    outbox: Outbox, item: OutboxItem, askable: Sequence[Any]
) -> tuple[str | None, Any]:
    """A row whose provider is not recorded: the first provider that says ``sent``
    (and its name); ``absent`` only when every provider with a lookup says so."""
    from ..providers.http.lookup import Lookup  # here: see ABSENT_AFTER

    if not askable:
        return None, Lookup("unknown", "no provider recorded, and none has a lookup")
    answers = []
    for provider in askable:
        answer = await _ask(outbox, item, provider)
        if answer.verdict == "sent":
            return provider.name, answer
        answers.append(answer)
    if all(answer.verdict == "absent" for answer in answers):
        return None, Lookup("absent", f"absent at every provider asked ({len(answers)})")
    return None, Lookup("unknown", "no provider recorded, and not every one could say")


@asynccontextmanager
async def _message(outbox: Outbox, message_id: str) -> AsyncIterator[Message | None]:
    """The row's message, for a lookup that compares content (Resend): loaded as the
    drain loads it, so a chunked row's large text or HTML is there (read from its
    chunks into a temporary file, removed on exit); None when the stored message no
    longer reads as a Message (an older version's row)."""
    stored = await outbox.store.content(message_id)
    async with AsyncExitStack() as stack:
        message = None
        if stored is not None:
            try:
                loading = _chunked.loaded(stored, outbox.store.read_chunk)
                message = await stack.enter_async_context(loading)
            except (ValueError, MessageError):
                message = None
        yield message
