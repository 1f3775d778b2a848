"""``mailer suppression list|add|remove|import|export|sync`` (CSV) and ``mailer events
list|purge``: rendering only; the work is the suppression list's and the event store's."""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .._log import one_line
from .common import EXIT_FAILED, EXIT_USAGE, ConfigOption, app, err, fail, friendly, out, run

if TYPE_CHECKING:
    from .._events import SuppressionEntry
    from .._mailer import Mailer

__all__ = ["events_app", "suppression_app"]

suppression_app = typer.Typer(
    name="suppression",
    help="Look at and manage the suppression list (docs/suppression.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(suppression_app)
events_app = typer.Typer(
    name="events",
    help="Look at stored delivery events (docs/events.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(events_app)

#: the CSV columns of export, and what import reads (only ``address`` is required)
CSV_COLUMNS = ("address", "reason", "provider", "message_id", "created")
_IMPORT_BATCH = 1000


def _mailer(config: Path) -> Mailer:
    from .._mailer import Mailer

    return Mailer.from_config(config)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(e: SuppressionEntry) -> list[str]:
    return [e.address, e.reason, e.provider or "", e.message_id or "", _when(e.created)]


@suppression_app.command("list")
@friendly
def list_(
    config: ConfigOption = Path("mailer.toml"),
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Entries (oldest first), one tab-separated line each."""
    mailer = _mailer(config)

    async def go() -> list[SuppressionEntry]:
        async with mailer:
            return await mailer.suppression.list(limit, offset)

    typer.echo("\t".join(CSV_COLUMNS))
    for entry in run(go):
        typer.echo("\t".join(one_line(f).replace("\t", " ") for f in _row(entry)))


@suppression_app.command("add")
@friendly
def add(
    addresses: Annotated[list[str], typer.Argument(help="Addresses to suppress.")],
    config: ConfigOption = Path("mailer.toml"),
    reason: Annotated[str, typer.Option(help="Why (kept with each entry).")] = "manual",
) -> None:
    """Suppress addresses for every provider."""
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            return sum([await mailer.suppression.add(a, reason) for a in addresses])

    count = _checked(go)
    out().print(f"{count} added, {len(addresses) - count} already suppressed")


@suppression_app.command("remove")
@friendly
def remove(
    addresses: Annotated[list[str], typer.Argument(help="Addresses to take off the list.")],
    config: ConfigOption = Path("mailer.toml"),
) -> None:
    """Take addresses off the list (mail to them is sent again)."""
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            return sum([await mailer.suppression.remove(a) for a in addresses])

    count = _checked(go)
    out().print(f"{count} of {len(addresses)} removed")
    if count < len(addresses):
        fail("some addresses were not on the list", "see `mailer suppression list`")


@suppression_app.command("export")
@friendly
def export(
    config: ConfigOption = Path("mailer.toml"),
    output: Annotated[str, typer.Option("--output", "-o", help="A file, or - for stdout.")] = "-",
) -> None:
    """Write the whole list as CSV (address, reason, provider, message_id, created)."""
    mailer = _mailer(config)

    async def go() -> list[SuppressionEntry]:
        entries: list[SuppressionEntry] = []
        async with mailer:
            while True:
                page = await mailer.suppression.list(10000, len(entries))
                entries += page
                if len(page) < 10000:
                    return entries

    entries = run(go)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_row(e) for e in entries)
    if output == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        Path(output).write_text(buffer.getvalue(), encoding="utf-8")
        out().print(f"{len(entries)} entries written to {output}")


@suppression_app.command("import")
@friendly
def import_(
    source: Annotated[str, typer.Argument(help="A CSV file (a header with `address`), or -.")],
    config: ConfigOption = Path("mailer.toml"),
    reason: Annotated[str, typer.Option(help="For rows without a reason.")] = "imported",
) -> None:
    """Add every address of a CSV file (as export writes it, or just an `address`
    column); rows whose address is not valid are reported and skipped, nothing else is."""
    from .._events import SuppressionEntry, normalize_recipient

    text = sys.stdin.read() if source == "-" else _read(source)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "address" not in reader.fieldnames:
        fail("the CSV has no `address` column", "its first line names the columns", EXIT_USAGE)
    now = datetime.now(UTC).timestamp()
    entries, bad = [], []
    for line, row in enumerate(reader, start=2):
        try:
            address = normalize_recipient(row.get("address") or "")
        except ValueError:
            bad.append(line)
            continue
        entries.append(
            SuppressionEntry(
                address,
                (row.get("reason") or reason).strip() or reason,
                _created(row.get("created"), now),
                row.get("provider") or None,
                row.get("message_id") or None,
            )
        )
    mailer = _mailer(config)

    async def go() -> int:
        added = 0
        async with mailer:
            for start in range(0, len(entries), _IMPORT_BATCH):
                batch = entries[start : start + _IMPORT_BATCH]
                added += len(await mailer.suppression.add_entries(batch))
        return added

    count = run(go)
    out().print(f"{count} added, {len(entries) - count} already suppressed")
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        fail(f"{len(bad)} row(s) without a valid address skipped (lines {shown})")


@suppression_app.command("sync")
@friendly
def sync_(
    config: ConfigOption = Path("mailer.toml"),
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", help="Only this provider (by its name); repeatable."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read the lists, count, write nothing.")
    ] = False,
) -> None:
    """Import each provider's own suppression list (SES account list, Postmark
    suppressions, SendGrid bounces/spam reports/unsubscribes, Mailgun bounces/
    complaints/unsubscribes) into ours; a second run adds nothing."""
    from .._events.sync import SyncReport, sync

    mailer = _mailer(config)
    names = [p.name for p in mailer.providers]
    unknown = sorted(set(provider or ()) - set(names))
    if unknown:
        fail(
            f"no provider named {', '.join(map(repr, unknown))} in the config",
            f"the providers are: {', '.join(names)}",
            EXIT_USAGE,
        )
    if mailer.suppression.config.store is None:
        fail(
            "no suppression.store in the config: the list would live in this process only",
            'set suppression = {store = "sqlite:///mail.db"} (or postgresql://, redis://)',
            EXIT_USAGE,
        )

    async def go() -> SyncReport:
        async with mailer:
            return await sync(
                mailer.suppression, mailer.providers, dry_run=dry_run, only=provider or ()
            )

    report = run(go)
    added = "would add" if dry_run else "added"
    typer.echo(f"provider\tlist\tlisted\t{added}\tskipped")
    for c in report.counts.values():
        typer.echo(f"{c.provider}\t{c.kind}\t{c.listed}\t{c.added}\t{c.skipped}")
    total = sum(c.listed for c in report.counts.values())
    out().print(
        f"{total} listed, {report.added} {added}"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    if report.unsupported:
        out().print(f"no suppression list to read from: {', '.join(report.unsupported)}")
    if report.errors:
        for name, error in report.errors.items():
            err().print(f"{name}: {escape(one_line(error))}", soft_wrap=True)
        fail(
            f"{len(report.errors)} provider list(s) could not be read in full",
            "the pages read were kept; fix the key's access and run sync again",
        )


@events_app.command("list")
@friendly
def events_list(
    message_id: Annotated[str, typer.Option("--message-id", help="The send's Message-ID.")],
    config: ConfigOption = Path("mailer.toml"),
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 1000,
) -> None:
    """A message's delivery events, oldest first, one tab-separated line each."""
    mailer = _mailer(config)

    async def go() -> list[Any]:
        async with mailer:
            return await mailer.delivery_events(message_id, limit)

    events = run(go)
    typer.echo("timestamp (UTC)\ttype\tprovider\trecipient\tbounce\tevent id\treason")
    for e in events:
        fields = [
            _when(e.timestamp.timestamp()),
            e.type,
            e.provider,
            e.recipient,
            e.bounce or "-",
            e.event_id or "-",
            one_line(e.reason or "-"),
        ]
        typer.echo("\t".join(f.replace("\t", " ") for f in fields))
    if not events:
        fail(f"no events stored for {message_id}", code=EXIT_FAILED)


@events_app.command("purge")
@friendly
def events_purge(
    config: ConfigOption = Path("mailer.toml"),
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Stored more than this long ago: 3600, 12h, 30d (default: events.retention).",
        ),
    ] = None,
) -> None:
    """Delete stored delivery events (and the sends' id records) older than
    --older-than, by default the config's events.retention (30 days). The suppression
    list is not touched. Redis expires events by itself: nothing to delete there."""
    from .._outbox.config import parse_duration

    seconds: float | None = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}", code=EXIT_USAGE)
        if not seconds > 0:
            fail("--older-than must be more than 0", "for example 30d", EXIT_USAGE)
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            return await mailer.purge_events(seconds)

    out().print(f"purged {run(go)} events")


def _created(text: str | None, default: float) -> float:
    """An exported ``created`` (ISO 8601, UTC) back to epoch seconds; else ``default``."""
    if not text:
        return default
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return default
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _checked(fn: Any) -> int:
    try:
        return int(run(fn))
    except ValueError as exc:  # a malformed address
        fail(str(exc), code=EXIT_USAGE)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", code=EXIT_USAGE)
