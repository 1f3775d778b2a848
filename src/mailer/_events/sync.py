"""``mailer suppression sync``: each provider's own suppression list into ours.

Why: a hard bounce or complaint an ESP recorded before this library was in front of it
(or while its webhook was not configured) is in that ESP's list only. After a failover
another provider would mail the address. Sync reads each list (the adapter's
``suppressions()``, page by page: SES account suppression list, Postmark suppressions
of the message stream, SendGrid bounces/spam reports/unsubscribes, Mailgun
bounces/complaints/unsubscribes) and adds its entries to our list, as an event of that
kind would: the reason is the kind (``bounced:hard``, ``complained``, ``unsubscribed``)
with the ESP's list and its own reason, the provider is the one it came from.

Idempotent: an address already on our list keeps its first entry, so a second run adds
nothing. A kind that ``suppression.on`` leaves out is counted as skipped, not imported
(our list suppresses exactly what the config says). Entries are written a page at a
time, so a run that fails half-way keeps the pages it wrote and a rerun completes it.
``dry_run`` reads everything and writes nothing; "added" then counts what a run would
add. A provider whose API refuses (a key without the scope) is reported and the others
go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import DeliveryError
from .._log import get_logger
from .model import normalize_recipient
from .store import SuppressionEntry
from .suppression import Suppression

__all__ = ["SyncCount", "SyncReport", "sync"]

log = get_logger("mailer.suppression")


@dataclass
class SyncCount:
    """One provider's list of one kind: entries read, added (or that would be, in a dry
    run), skipped (an address that is not one, or a kind ``suppression.on`` omits)."""

    provider: str
    kind: str
    listed: int = 0
    added: int = 0
    skipped: int = 0


@dataclass
class SyncReport:
    """What a sync did, per provider and kind, and what it could not do."""

    counts: dict[tuple[str, str], SyncCount] = field(default_factory=dict)
    #: provider -> why its list could not be read (in full)
    errors: dict[str, str] = field(default_factory=dict)
    #: providers whose adapter cannot list their ESP's suppressions
    unsupported: list[str] = field(default_factory=list)
    dry_run: bool = False

    def count(self, provider: str, kind: str) -> SyncCount:
        key = (provider, kind)
        if key not in self.counts:
            self.counts[key] = SyncCount(provider, kind)
        return self.counts[key]

    @property
    def added(self) -> int:
        return sum(c.added for c in self.counts.values())


async def sync(
    suppression: Suppression,
    providers: Sequence[Any],
    *,
    dry_run: bool = False,
    only: Sequence[str] = (),
) -> SyncReport:
    """Import every provider's (or those named in ``only``) suppression list."""
    report = SyncReport(dry_run=dry_run)
    await suppression.ready()  # the local copy: what a dry run compares with
    seen: set[str] = set()  # a dry run's "would add", across lists and providers
    for provider in providers:
        name = str(provider.name)
        if only and name not in only:
            continue
        lister = getattr(provider, "suppressions", None)
        pages = lister() if callable(lister) else None
        if pages is None:
            report.unsupported.append(name)
            continue
        try:
            async for page in pages:
                await _import(suppression, report, name, page, dry_run, seen)
        except DeliveryError as exc:
            report.errors[name] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "suppression sync from %s failed: %s",
                name,
                report.errors[name],
                extra={"event": "suppression_sync_failed", "provider": name},
            )
    log.info(
        "suppression sync: %d %s",
        report.added,
        "would be added" if dry_run else "added",
        extra={"event": "suppression_sync", "added": report.added, "dry_run": dry_run},
    )
    return report


async def _import(
    suppression: Suppression,
    report: SyncReport,
    provider: str,
    page: Sequence[Any],
    dry_run: bool,
    seen: set[str],
) -> None:
    """One page of one provider's list: count it, and add (or weigh) its entries."""
    now = time.time()
    entries: list[tuple[SyncCount, SuppressionEntry]] = []
    for listed in page:
        count = report.count(provider, listed.kind)
        count.listed += 1
        if listed.kind not in suppression.config.on:
            count.skipped += 1
            continue
        try:
            address = normalize_recipient(listed.address)
        except ValueError:
            count.skipped += 1
            continue
        reason = f"{listed.kind}: {listed.detail}"[:500]
        created = listed.created if listed.created is not None else now
        entries.append((count, SuppressionEntry(address, reason, created, provider, None)))
    if not entries:
        return
    if dry_run:
        known = suppression.check(e.address for _, e in entries)
        new = {e.address for _, e in entries if e.address not in known} - seen
        seen |= new
    else:
        new = set(await suppression.add_entries([e for _, e in entries]))
    for count, entry in entries:
        if entry.address in new:
            count.added += 1
            new.discard(entry.address)
