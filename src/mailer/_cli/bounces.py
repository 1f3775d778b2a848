"""``mailer bounces ingest``: an SMTP bounce or complaint report, piped from the MTA."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import EXIT_USAGE, ConfigOption, app, fail, friendly, out, run

__all__ = ["bounces_app"]

bounces_app = typer.Typer(
    name="bounces",
    help="Read SMTP bounces (RFC 3464) and complaint reports (RFC 5965).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(bounces_app)


@bounces_app.command("ingest")
@friendly
def ingest(
    source: Annotated[str, typer.Argument(help="The raw message: a file, or - for stdin.")] = "-",
    config: ConfigOption = Path("mailer.toml"),
    provider: Annotated[
        str, typer.Option(help="The provider the bounce is recorded for.")
    ] = "smtp",
) -> None:
    """Store and apply the events of one bounce or complaint (for a pipe from the MTA:
    `bounces: "|mailer bounces ingest --config /etc/mailer.toml"`). Exit status 0 also
    for a message that is no report, so the MTA does not bounce the bounce."""
    from .._mailer import Mailer

    if source == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            fail(f"cannot read {source}: {exc.strerror}", code=EXIT_USAGE)
    mailer = Mailer.from_config(config)

    async def go() -> tuple[int, int, tuple[str, ...]]:
        async with mailer:
            report = await mailer.ingest_bounce(raw, provider=provider)
        return report.new, report.duplicates, report.suppressed

    try:
        new, duplicates, suppressed = run(go)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    out().print(
        f"{new} event(s) stored, {duplicates} already seen; suppressed: "
        f"{', '.join(suppressed) or 'none'}"
    )
