"""``mailer health``: each provider's breaker, probe and rate-limit slots as the health
store has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from .._log import one_line
from .._text import REASON
from .common import ConfigOption, JsonOption, app, fail, friendly, out, print_json, run


@app.command()
@friendly
def health(config: ConfigOption = Path("mailer.toml"), as_json: JsonOption = False) -> None:
    """Each provider's health as the store has it: state, who holds the probe, when the
    next probe may run, and the rate-limit slots left (shared ones with a Redis store)."""
    from .._config import load_config
    from .._mailer import Mailer
    from .._redact import redact_url

    cfg = load_config(config)
    mailer = Mailer.from_config(cfg)
    names = [p.name for p in mailer.providers]
    store = redact_url(cfg.health.store)

    async def go() -> dict[str, dict[str, Any]]:
        async with mailer:
            try:
                with anyio.fail_after(max(cfg.health.store_timeout * 8, 2.0)):
                    return await mailer._runtime.snapshot(names)
            except Exception as exc:
                error = ConfigError(
                    f"cannot read the health store {store}: {type(exc).__name__}: "
                    f"{one_line(str(exc), REASON)}"
                )
            raise error

    shared = cfg.health.store != "memory"
    try:
        rows: dict[str, dict[str, Any]] = run(go)
    except ConfigError as exc:
        fail(
            str(exc),
            "is Redis running and is health.store its URL? Sends do not need it: "
            "each process falls back to its own breakers",
        )
    if as_json:
        print_json(
            {
                "store": store,
                "prefix": cfg.health.prefix if shared else None,
                "providers": [{"name": n, **row} for n, row in rows.items()],
            }
        )
        return
    title = f"Health in {store}" + (f" (prefix {cfg.health.prefix})" if shared else "")
    table = Table(title=title, title_justify="left")
    for col in ("name", "state", "failures", "next probe", "probe held by", "rate limit"):
        table.add_column(col)
    for name, row in rows.items():
        state = row["state"]
        colour = {"closed": "green", "open": "red"}.get(state, "yellow")
        wait = row["next_probe_in"]
        probe = f"in {wait:.1f}s" if state == "open" and wait > 0 else "-"
        if state == "open" and wait <= 0:
            probe = "now"
        holder = row["probe_holder"] or "-"
        if row["probe_holder"]:
            holder += f" ({row['probe_lease_left']:.1f}s left)"
        limit = row["rate_limit"]
        rate = "-"
        if limit is not None:
            rate = (
                f"{limit['slots_left']}/{limit['burst']} left "
                f"({limit['messages']} per {limit['per']:g}s)"
            )
        table.add_row(
            escape(name), f"[{colour}]{state}[/]", str(row["failures"]), probe, escape(holder), rate
        )
    out().print(table)
    if not shared:
        out().print(
            "health.store is memory: each process keeps its own breakers, so this shows a "
            "fresh process; set health.store to a Redis URL to share them"
        )
