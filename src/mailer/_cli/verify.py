"""``mailer verify``: every provider's connection, TLS and credentials checked at once,
without sending."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from .. import _clock
from .._attempt import AttemptContext
from .._docs import see
from .._log import one_line
from .._text import REASON
from .common import (
    EXIT_FAILED,
    ConfigOption,
    JsonOption,
    app,
    err,
    error_json,
    fail,
    friendly,
    out,
    print_json,
    run,
)


@app.command()
@friendly
def verify(
    config: ConfigOption = Path("mailer.toml"),
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds each provider's check may take (they run at once); default: "
            "budget.pre_commit, what a send gives a provider to connect and log in.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check every provider (connect, TLS, auth) without sending; exit 1 if any fails."""
    from .._config import load_config
    from .._mailer import Mailer

    cfg = load_config(config)
    types = {entry.name or entry.type: entry.type for entry in cfg.providers if entry.enabled}
    mailer = Mailer.from_config(cfg)
    health = mailer.health()  # names and priorities, in the Mailer's order
    # A check is held to what a send would give the provider before its commit point:
    # a verify that waits 10 s for a greeting a send gives up on after 3 s says "ok"
    # about a provider every send fails over from (issue 21, item 11).
    limit = cfg.budget.pre_commit if timeout is None else timeout
    budget = "the pre-commit budget" if timeout is None else "--timeout"
    if not as_json:
        err().print(
            f"[dim]checking {len(health)} provider(s): connect, TLS, greeting, EHLO, AUTH, "
            f"each within {limit:.3g}s ({budget})...[/]"
        )

    async def go() -> dict[str, Exception | None]:
        results: dict[str, Exception | None] = {}

        async def one(name: str, provider: Any) -> None:
            # Each check under its own deadline, so one that hangs is named, not
            # "verify did not finish"; the others still report.
            # An attempt under the budget, as routing opens for a send: it cuts the
            # provider's own timeouts short, so its error names the step that did not
            # answer (the greeting, TLS, a reply); the scope is the backstop.
            now = _clock.now()
            attempt = AttemptContext.open(
                name, deadline=now + limit + 1.0, started=now, grace=0.5, budget=limit
            )
            token = attempt.enter()
            try:
                assert attempt.scope is not None
                with attempt.scope:
                    await provider.verify()
                if attempt.scope.cancelled_caught:
                    raise TimeoutError
            except TimeoutError:
                results[name] = TimeoutError(
                    f"no answer within {limit:.3g}s ({budget}): the provider hangs (check "
                    "its host, port, secure setting and timeouts)"
                )
            except Exception as exc:
                results[name] = exc
            else:
                results[name] = None
            finally:
                attempt.disarm()
                AttemptContext.exit(token)

        async with mailer, anyio.create_task_group() as tg:
            for provider in mailer.providers:
                tg.start_soon(one, provider.name, provider)
        return {name: results[name] for name in health}

    results: dict[str, Exception | None] = run(go)
    failed = [name for name, error in results.items() if error is not None]
    if as_json:
        print_json(
            {
                "ok": not failed,
                "config": str(config),
                "providers": [
                    {
                        "name": name,
                        "type": types.get(name),
                        "priority": health[name]["priority"],
                        "ok": error is None,
                        "error": None if error is None else error_json(error),
                    }
                    for name, error in results.items()
                ],
            }
        )
        if failed:
            raise typer.Exit(EXIT_FAILED)
        return
    table = Table(title=f"Providers in {config}", title_justify="left")
    for col in ("priority", "name", "type", "result"):
        table.add_column(col)
    for name, error in results.items():
        if error is None:
            status = "[green]ok[/]"
        else:
            why = one_line(str(error.args[0]) if error.args else str(error), REASON)
            status = f"[red]FAILED[/] {escape(type(error).__name__)}: {escape(why)}"
        table.add_row(str(health[name]["priority"]), escape(name), types.get(name, "?"), status)
    out().print(table)
    if failed:
        fail(
            f"{len(failed)} of {len(results)} provider(s) failed: {', '.join(failed)}",
            "each message is explained in " + see("troubleshooting"),
        )
    out().print(f"[green]all {len(results)} provider(s) ok[/]")
