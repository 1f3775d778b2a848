"""``mailer providers``: the installed provider types and the ones that fail to load."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from .._log import one_line
from .._text import REASON
from .common import app, friendly, out


@app.command()
@friendly
def providers() -> None:
    """List installed provider types, the package each comes from, and any that fail."""
    from .._plugins import discover

    infos = discover()
    table = Table(title="Provider types (entry-point group mailer.providers)", title_justify="left")
    for col in ("type", "package", "target", "status"):
        table.add_column(col)
    broken = 0
    for info in infos:
        package = f"{info.distribution or '?'} {info.version or ''}".strip()
        if info.distribution == "mailer-failover":
            package += " (built-in)"
        if info.ok:
            status = "[green]ok[/]"
        else:
            broken += 1
            status = f"[red]failed to load[/]: {escape(one_line(info.error or '', REASON))}"
        table.add_row(info.type, escape(package), escape(info.target), status)
    out().print(table)
    if broken:
        out().print(
            f"[yellow]{broken} provider type(s) failed to load[/]; the others work. "
            "Reinstall the package named, or its missing dependency."
        )
